"""The per-check report ``run-scenario`` prints: one line per check, details under failures."""

from __future__ import annotations

from typing import IO

from netns_lab.lab import Lab
from netns_lab.probes.checks import CheckOutcome


def print_report(lab: Lab, outcomes: list[CheckOutcome], built_in: float, out: IO[str]) -> None:
    topo = lab.topology
    source = lab.scenario.path if lab.scenario else ""
    print(
        f"scenario {lab.name} ({source}): {len(topo.nodes)} nodes, {len(topo.pods)} pods, "
        f"{topo.network}, pod MTU {topo.pod_mtu}; up in {built_in:.2f}s",
        file=out,
    )
    for o in outcomes:
        mark = "PASS" if o.passed else "FAIL"
        print(f"  {mark}  {o.check.name}: {o.summary}", file=out)
        if not o.passed:
            for d in o.details:
                print(f"          {d}", file=out)
    passed = sum(o.passed for o in outcomes)
    verdict = "all passed" if passed == len(outcomes) else f"{len(outcomes) - passed} FAILED"
    print(f"{passed}/{len(outcomes)} checks passed ({verdict})", file=out)
