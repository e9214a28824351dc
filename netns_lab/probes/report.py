"""The reports ``run-scenario`` writes: one line per check on the terminal (details under
failures), JUnit XML for CI systems (``--junit``), and JSON for tools (``--json``)."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from typing import IO, Any

from netns_lab.lab import Lab
from netns_lab.probes.checks import CheckOutcome


def print_header(lab: Lab, built_in: float, out: IO[str], here: int | None = None) -> None:
    """The report's first lines (printed before the checks run; ``here``: how many checks run
    on this machine of a spread lab)."""
    topo = lab.topology
    source = lab.scenario.path if lab.scenario else ""
    print(
        f"scenario {lab.name} ({source}): {len(topo.nodes)} nodes, {len(topo.pods)} pods, "
        f"{topo.network}, pod MTU {topo.pod_mtu}; up in {built_in:.2f}s",
        file=out, flush=True,
    )
    if topo.is_spread:
        me = topo.hosts[topo.host]
        total = len(lab.scenario.checks) if lab.scenario else (here or 0)
        print(f"  {me.name} ({me.ip}) of {len(topo.hosts)} machines: nodes {', '.join(n.name for n in topo.local_nodes)}; "
              f"{here} of {total} checks have their source here, the others run on the other machines", file=out, flush=True)


def print_outcome(o: CheckOutcome, out: IO[str]) -> None:
    """One check's line (details under a failure), flushed: shown as soon as the check is done."""
    mark = "PASS" if o.passed else "FAIL"
    print(f"  {mark}  {o.check.name}: {o.summary}", file=out)
    if not o.passed:
        for d in o.details:
            print(f"          {d}", file=out)
    out.flush()


def print_summary(outcomes: list[CheckOutcome], out: IO[str], planned: int | None = None) -> None:
    """The last line; ``planned`` (the number of checks that should have run) set when the run
    was interrupted before all of them did."""
    passed = sum(o.passed for o in outcomes)
    if planned is not None and planned > len(outcomes):
        print(f"interrupted after {len(outcomes)} of {planned} checks: {passed} passed, {len(outcomes) - passed} failed, "
              f"{planned - len(outcomes)} not run", file=out, flush=True)
        return
    verdict = "all passed" if passed == len(outcomes) else f"{len(outcomes) - passed} FAILED"
    print(f"{passed}/{len(outcomes)} checks passed ({verdict})", file=out, flush=True)


def print_report(lab: Lab, outcomes: list[CheckOutcome], built_in: float, out: IO[str]) -> None:
    """The whole report at once (``run-scenario`` prints it piece by piece, as checks finish)."""
    print_header(lab, built_in, out, len(outcomes))
    for o in outcomes:
        print_outcome(o, out)
    print_summary(outcomes, out)


def report_json(lab: Lab, outcomes: list[CheckOutcome], built_in: float) -> dict[str, Any]:
    topo = lab.topology
    return {
        "scenario": lab.name,
        "file": lab.scenario.path if lab.scenario else "",
        "nodes": len(topo.nodes),
        "pods": len(topo.pods),
        "network": topo.network,
        "proxyMode": lab.proxy_mode,
        "upSeconds": round(built_in, 3),
        "passed": sum(o.passed for o in outcomes),
        "failed": sum(not o.passed for o in outcomes),
        **({"machine": topo.hosts[topo.host].name, "machines": [str(h.ip) for h in topo.hosts]} if topo.is_spread else {}),
        "checks": [{"name": o.check.name, "action": o.check.action, "passed": o.passed, "summary": o.summary,
                    "details": o.details, "seconds": round(o.seconds, 3)} for o in outcomes],
    }


def junit_xml(lab: Lab, outcomes: list[CheckOutcome], built_in: float) -> str:
    """One ``testsuite`` per scenario, one ``testcase`` per check; failures carry the details."""
    suite = ET.Element("testsuite", {
        "name": f"netns-lab.{lab.name}", "tests": str(len(outcomes)), "failures": str(sum(not o.passed for o in outcomes)),
        "errors": "0", "skipped": "0", "time": f"{built_in + sum(o.seconds for o in outcomes):.3f}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    props = ET.SubElement(suite, "properties")
    for k, v in (("file", lab.scenario.path if lab.scenario else ""), ("network", lab.topology.network),
                 ("proxyMode", lab.proxy_mode), ("upSeconds", f"{built_in:.3f}")):
        ET.SubElement(props, "property", {"name": k, "value": v})
    for o in outcomes:
        case = ET.SubElement(suite, "testcase", {"classname": f"netns-lab.{lab.name}", "name": o.check.name, "time": f"{o.seconds:.3f}"})
        if not o.passed:
            failure = ET.SubElement(case, "failure", {"message": o.summary, "type": "CheckFailed"})
            failure.text = "\n".join(o.details) or o.summary
        else:
            ET.SubElement(case, "system-out").text = o.summary
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_reports(lab: Lab, outcomes: list[CheckOutcome], built_in: float, junit: str = "", json_path: str = "") -> None:
    if junit:
        with open(junit, "w") as fh:
            fh.write(junit_xml(lab, outcomes, built_in))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(report_json(lab, outcomes, built_in), fh, indent=2)
