"""Where an iptables-mode sync spends its time: Python, iptables-restore's own work, and the
kernel's (figures, not pass/fail).

``python benchmarks/ipt_phases.py legacy:1000,10000 nft:1000`` (as root). For N generated
Services (10 endpoints each) on node-1 of benchmarks/scenarios/services.yaml in iptables
mode with that backend: a full sync and the median of 5 one-endpoint changes, each split
into render (Python), and the ``iptables-restore --noflush`` process's user time (parsing,
building the ruleset) and system time (the kernel: x_tables replaces a whole table per
commit, iptables-nft sends nf_tables messages), from its resource usage.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import replace

HERE = os.path.dirname(os.path.abspath(__file__))


def _timed_sync(proxier, ports, full=False):  # type: ignore[no-untyped-def]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    st = proxier.sync(ports, full=full)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return st.render_s, st.apply_s, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def point(backend: str, n: int) -> dict[str, float]:
    from bench_services import generated_ports  # this directory is the script's (sys.path[0])

    from netns_lab.lab import Lab
    from netns_lab.realize.proxier import IPTABLES_BACKEND_ENV

    os.environ[IPTABLES_BACKEND_ENV] = backend
    lab = Lab.from_file(os.path.join(HERE, "scenarios", "services.yaml"), {"cluster.proxyMode": "iptables", "name": "bipt-phases"})
    with lab.up():
        proxier = lab.proxiers["node-1"]
        kube = tuple(lab.service_ports())
        gen = list(generated_ports(n - 1))
        full = _timed_sync(proxier, kube + tuple(gen), full=True)
        mid = len(gen) // 2
        whole = gen[mid].endpoints
        changes = []
        for k in range(5):
            gen[mid] = replace(gen[mid], endpoints=whole[:-1] if k % 2 == 0 else whole)
            changes.append(_timed_sync(proxier, kube + tuple(gen)))
    change = sorted(changes, key=lambda c: c[0] + c[1])[2]
    return {"full": full, "change": change}  # type: ignore[dict-item]


def main() -> None:
    specs = sys.argv[1:] or ["legacy:1000,10000", "nft:1000"]
    print("| backend | Services | sync | render (Python) | iptables-restore wall | of which user | of which system | Python share |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for spec in specs:
        backend, _, sizes = spec.partition(":")
        for n in (int(s) for s in sizes.split(",")):
            r = point(backend, n)
            for what, (render, apply, user, system) in (("full", r["full"]), ("one-endpoint change", r["change"])):
                unit, k = ("s", 1) if what == "full" else ("ms", 1000)
                print(f"| iptables-{backend} | {n:,} | {what} | {k * render:.2f} {unit} | {k * apply:.2f} {unit} | "
                      f"{k * user:.2f} {unit} | {k * system:.2f} {unit} | {100 * render / (render + apply):.0f}% |", flush=True)


if __name__ == "__main__":
    main()
