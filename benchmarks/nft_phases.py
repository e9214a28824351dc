"""Where an nftables-mode sync spends its time over netlink, and the kernel's floor (figures,
not pass/fail).

``python benchmarks/nft_phases.py 1000 5000 10000`` (as root). For N generated Services
(10 endpoints each) on node-1 of benchmarks/scenarios/services.yaml, after a full sync:
* one-endpoint change: render (Python), compile to messages (Python), the batch sent and
  committed (the kernel);
* the kernel's floor for any change that adds a rule: a batch that adds and removes one
  chain whose rule jumps to ``mark-for-masquerade``, next to the same batch with a rule that
  only compares an address. nf_tables validates the whole table from its base chains when a
  transaction adds an expression that can jump (nf_tables_validate at commit), and every
  commit visits every chain of the table (nf_tables_commit), so both grow with the table;
* the full sync (render and apply, as the proxier times them).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import replace

HERE = os.path.dirname(os.path.abspath(__file__))


def point(n: int) -> dict[str, float]:
    from bench_services import generated_ports  # this directory is the script's (sys.path[0])

    from netns_lab.lab import Lab
    from netns_lab.realize import nftmsg, nftnl

    lab = Lab.from_file(os.path.join(HERE, "scenarios", "services.yaml"), {"cluster.proxyMode": "nftables", "name": "bnft-phases"})
    out: dict[str, float] = {"services": n}
    with lab.up():
        proxier = lab.proxiers["node-1"]
        kube = tuple(lab.service_ports())
        gen = list(generated_ports(n - 1))
        full = proxier.sync(kube + tuple(gen), full=True)
        out["full_render_s"], out["full_apply_s"] = full.render_s, full.apply_s
        mid = len(gen) // 2
        whole = gen[mid].endpoints
        render, compile_, send = [], [], []
        for k in range(7):
            old = gen[mid]
            gen[mid] = replace(old, endpoints=whole[:-1] if k % 2 == 0 else whole)
            t0 = time.perf_counter()
            text = proxier.plan.transaction(kube + tuple(gen), False, None, None, ((old,), (gen[mid],)))
            t1 = time.perf_counter()
            messages = nftmsg.compile_transaction(proxier.plan.table, text)
            t2 = time.perf_counter()
            nftnl.send(proxier.netns, messages)
            t3 = time.perf_counter()
            render.append(t1 - t0)
            compile_.append(t2 - t1)
            send.append(t3 - t2)
        out["change_render_ms"] = 1000 * statistics.median(render)
        out["change_compile_ms"] = 1000 * statistics.median(compile_)
        out["change_kernel_ms"] = 1000 * statistics.median(send)
        out["change_messages"] = len(messages)
        for name, rule in (("floor_jump_ms", "jump mark-for-masquerade"), ("floor_nojump_ms", "ip saddr 10.0.0.1")):
            text = (f"add chain ip kube-proxy bench-probe\nadd rule ip kube-proxy bench-probe {rule}\n"
                    "delete chain ip kube-proxy bench-probe\n")
            messages = nftmsg.compile_transaction("ip kube-proxy", text)
            samples = []
            for _ in range(7):
                t0 = time.perf_counter()
                nftnl.send(proxier.netns, messages)
                samples.append(time.perf_counter() - t0)
            out[name] = 1000 * statistics.median(samples)
    return out


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 5000, 10000]
    print("| Services | full sync render + apply s | one-endpoint change: render / compile / kernel ms (messages) "
          "| kernel floor: a batch adding a jump / without ms |")
    print("|---:|---:|---:|---:|")
    for n in sizes:
        r = point(n)
        print(f"| {n:,} | {r['full_render_s']:.2f} + {r['full_apply_s']:.2f} | {r['change_render_ms']:.1f} / "
              f"{r['change_compile_ms']:.1f} / {r['change_kernel_ms']:.1f} ({r['change_messages']:.0f}) | "
              f"{r['floor_jump_ms']:.1f} / {r['floor_nojump_ms']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
