"""Where an ipvs-mode full sync spends its time, phase by phase (figures, not pass/fail).

Run in the stock-kernel VM (this kernel may lack IP_VS):
``invoke test-vm --exec "python benchmarks/ipvs_phases.py 200"``. It builds
benchmarks/scenarios/services.yaml in ipvs mode, syncs N generated Services on node-1 and
prints the time in each step of realize.ipvs: kube-ipvs0 addresses, ipset and IPVS requests
queued (encoded), the batches sent and acknowledged (the kernel's share), the iptables glue.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def main(n: int) -> None:
    from bench_services import generated_ports  # this directory is the script's (sys.path[0])

    from netns_lab.lab import Lab
    from netns_lab.realize import ipvs

    times: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrap(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - t0
        return wrap

    proxier_cls = ipvs.IpvsProxier
    proxier_cls._dummy = timed("kube-ipvs0 addresses", proxier_cls._dummy)  # type: ignore[method-assign]
    proxier_cls._ipsets = timed("ipset requests queued", proxier_cls._ipsets)  # type: ignore[method-assign]
    proxier_cls._virtual_servers = timed("IPVS requests queued", proxier_cls._virtual_servers)  # type: ignore[method-assign]
    ipvs._Requests.commit = timed("batches sent and acknowledged", ipvs._Requests.commit)  # type: ignore[method-assign]
    ipvs._run = timed("iptables glue", ipvs._run)
    lab = Lab.from_file(os.path.join(HERE, "scenarios", "services.yaml"), {"cluster.proxyMode": "ipvs", "name": "ipvs-phases"})
    with lab.up():
        ports = tuple(lab.service_ports()) + generated_ports(n)
        times.clear()
        stats = lab.proxiers["node-1"].sync(ports, full=True)
    print(f"ipvs full sync of {n} Services: render {stats.render_s:.2f} s, apply {stats.apply_s:.2f} s")
    for name, seconds in times.items():
        print(f"  {name:32} {seconds:7.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
