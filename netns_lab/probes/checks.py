"""Run a scenario's ``checks:`` against a running lab and judge each one."""

from __future__ import annotations

import time

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from netns_lab.lab import Lab
from netns_lab.model import Check, ObjectRef
from netns_lab.probes.connect import Probe, run_probes
from netns_lab.probes.icmp import ping
from netns_lab.probes.promises import matrix, own_addresses
from netns_lab.probes.resolve import normalize, resolve


@dataclass
class CheckOutcome:
    check: Check
    passed: bool
    summary: str
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _target_ip(lab: Lab, check: Check) -> tuple[str | None, str]:
    """The IP to connect to; a bare name is resolved inside the source, with its own libc
    resolver and resolv.conf (``getent ahostsv4`` under ``ip netns exec``)."""
    assert check.target and check.source
    if check.target.kind != "name":
        return lab.ip_of(check.target, check.family), ""
    out = lab.exec(check.source, ["getent", "ahostsv6" if check.family == 6 else "ahostsv4", check.target.name], timeout=10)
    # ahostsv6 maps an A-only name into IPv6 (::ffff:a.b.c.d, AI_V4MAPPED): over IPv6 that is no answer
    found = [line.split()[0] for line in out.stdout.splitlines() if line.split() and not line.startswith("::ffff:")]
    if out.returncode != 0 or not found:
        return None, f"{check.target.name} does not resolve{' to an IPv6 address (no AAAA)' if check.family == 6 else ''} in {check.source}"
    return found[0], f"{check.target.name} -> {found[0]}; "


def _expected_client_ips(lab: Lab, ref: ObjectRef, source: ObjectRef, family: int | None = None) -> set[str]:
    if ref.kind == "self":
        return set(lab.addresses(source, family or lab.topology.families[0]))
    if ref.kind == "node":  # a node may use any of its addresses as source (cni0, flannel.1)
        node = lab.topology.node(ref.name)
        if node.netns in lab.topology.namespaces:
            return set(lab.addresses(ref, family or lab.topology.families[0]))
        # on another machine of a spread lab: the addresses the plan gave it (the *6 ones: a dual-stack lab's IPv6)
        own = (node.ip, node.gateway, node.vtep_ip) if family in (None, node.ip.version) else (node.ip6, node.gateway6, node.vtep_ip6)
        return {str(a) for a in own[: 3 if lab.topology.network == "vxlan" else 2] if a is not None}
    return {lab.ip_of(ref, family)}


def _server_problems(lab: Lab, check: Check, served: Counter[str | None], ok_results: list) -> list[str]:  # type: ignore[type-arg]
    """What the answering servers got wrong: a pod outside ``servedBy``, a client address
    other than ``clientIP`` (for connect and http checks alike)."""
    want, problems = check.expect, []
    if want.served_by is not None:
        allowed = {k.split("/", 1)[1] for k in want.served_by}
        for pod, n in served.items():
            if pod not in allowed:
                problems.append(f"served by {pod} ({n}x), expected one of {sorted(allowed)}")
    if want.client_ip is not None:
        assert check.source is not None
        expected = _expected_client_ips(lab, want.client_ip, check.source, check.family)
        for r in ok_results:
            if r.client_ip not in expected:
                problems.append(f"server saw client {r.client_ip}, expected {sorted(expected)}")
                break
    return problems


def _served_text(served: Counter[str | None]) -> str:
    if not served:
        return ""
    return "; served by " + ", ".join(f"{k}" + (f" x{v}" if v > 1 else "") for k, v in sorted(served.items()))


def _connect(lab: Lab, check: Check) -> CheckOutcome:
    assert check.source and check.target and check.port
    ip, how = _target_ip(lab, check)
    if ip is None:
        passed = check.expect.result == "failed"
        return CheckOutcome(check, passed, how if passed else f"expected {check.expect.result}: {how}")
    probe = Probe(lab.netns_of(check.source), ip, check.port, check.protocol)
    timeout = 1.0 if check.expect.result in ("timeout", "failed") else 2.0
    results = run_probes([probe] * check.count, timeout=timeout, parallel=64)
    want = check.expect
    problems: list[str] = []
    outcomes = Counter(r.result for r in results)
    for r in results:
        if want.result == "failed" and r.result == "ok":
            problems.append("connected, expected failure")
        elif want.result not in (None, "failed") and r.result != want.result:
            why = f"served by {r.served_by}" if r.result == "ok" else r.detail
            problems.append(f"got {r.result} ({why})")
    ok_results = [r for r in results if r.result == "ok"]
    served = Counter(r.served_by for r in ok_results)
    problems += _server_problems(lab, check, served, ok_results)
    seen = how + ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())) + _served_text(served)
    if ok_results:
        seen += f"; client seen as {ok_results[0].client_ip}"
    if problems:
        return CheckOutcome(check, False, f"expected {want.result}: {problems[0]}", [seen, *problems[1:5]])
    return CheckOutcome(check, True, seen)


def _ping(lab: Lab, check: Check) -> CheckOutcome:
    assert check.source and check.target
    ip, how = _target_ip(lab, check)
    if ip is None:
        return CheckOutcome(check, check.expect.result == "no-reply", how)
    res = ping(lab.netns_of(check.source), ip, timeout=1.0, count=check.count)
    passed = res.result == check.expect.result
    text = f"{res.result}: {res.detail}"
    return CheckOutcome(check, passed, text if passed else f"expected {check.expect.result}, got {text}")


def _matrix(lab: Lab, check: Check) -> CheckOutcome:
    assert check.matrix
    report = matrix(lab.topology, check.matrix, "tcp" if check.protocol == "http" else check.protocol, family=check.family or lab.topology.families[0])
    if not report.pairs:
        return CheckOutcome(check, False, "no pairs to test (do the pods declare containerPorts?)")
    return CheckOutcome(check, report.ok, report.summary(), [p.describe() for p in report.failures[:10]])


def _reachability(lab: Lab, check: Check) -> CheckOutcome:
    from netns_lab.probes import reachability as reach

    table = check.reachability
    assert table is not None
    observed = reach.observe(lab, table)
    wrong = sum(e != o for er, orow in zip(table.expected, observed) for e, o in zip(er, orow))
    probed = len(table.pods) * (len(table.pods) - 1)
    if not wrong:
        return CheckOutcome(check, True, f"{probed} pairs as expected")
    details = ["expected:", *reach.render(table.pods, table.expected), "observed:", *reach.render(table.pods, observed),
               "difference (X: not as expected):", *reach.render(table.pods, reach.difference(table.expected, observed))]
    return CheckOutcome(check, False, f"{wrong} of {probed} pairs not as expected", details)


def _value_text(lab: Lab, ref: ObjectRef, family: int | None = None) -> str:
    return normalize(ref.name) if ref.kind == "value" else lab.ip_of(ref, family)


def _resolve(lab: Lab, check: Check) -> CheckOutcome:
    assert check.source and check.target
    res = resolve(lab.netns_of(check.source), check.target.name, check.record_type, tcp=check.protocol == "tcp")
    want = check.expect
    got = sorted(normalize(a) for a in res.answers)
    text = f"{res.result}: {res.detail}" + (f": {', '.join(got)}" if got else "")
    if want.result != res.result and not (want.result == "failed" and res.result != "ok"):
        return CheckOutcome(check, False, f"expected {want.result}, got {text}")
    if want.answers is not None:
        family = 6 if check.record_type == "AAAA" else None  # an object in an AAAA answer: its IPv6 address
        expected = sorted(_value_text(lab, a, family) for a in want.answers)
        if expected != got:
            return CheckOutcome(check, False, f"expected answers {expected}, got {got or 'none'} ({res.detail})")
    return CheckOutcome(check, True, text)


def _env(lab: Lab, check: Check) -> CheckOutcome:
    assert check.source
    out = lab.exec(check.source, ["env"], timeout=10)
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    wrong = []
    for key, ref in check.env:
        want = None if ref.kind == "unset" else ref.name if ref.kind == "value" else lab.ip_of(ref)
        if env.get(key) != want:
            wrong.append(f"{key}={env.get(key, '<unset>')} (expected {want if want is not None else '<unset>'})")
    if wrong:
        return CheckOutcome(check, False, wrong[0], wrong[1:])
    return CheckOutcome(check, True, f"{len(check.env)} variable(s) as kubelet sets them")


def _http(lab: Lab, check: Check) -> CheckOutcome:
    """GET the URL (through an Ingress, typically) ``count`` times and judge status, body, pod."""
    from netns_lab.probes.http import get

    assert check.source and check.target and check.url
    ip, how = _target_ip(lab, check)
    if ip is None:
        return CheckOutcome(check, check.expect.result == "failed", how)
    ca = None
    if check.ca is not None:
        secret = lab.secret(f"{check.ca.namespace}/{check.ca.name}")
        ca = secret.get("ca.crt") or secret.get("tls.crt")
    want = check.expect
    results = [get(lab.netns_of(check.source), check.url, ip, check.port, ca, check.insecure) for _ in range(check.count)]
    problems: list[str] = []
    for r in results:
        if want.result == "failed":
            if r.result == "ok":
                problems.append(f"got HTTP {r.status}, expected failure")
            continue
        if r.result != want.result:
            problems.append(f"got {r.result} ({r.detail})")
            continue
        if want.status is not None and r.status != want.status:
            problems.append(f"got status {r.status}, expected {want.status} (body {r.body[:80]!r})")
        if want.body is not None and want.body not in r.body:
            problems.append(f"body {r.body[:80]!r} lacks {want.body!r}")
    ok = [r for r in results if r.result == "ok"]
    if want.result != "failed":
        problems += _server_problems(lab, check, Counter(r.served_by for r in ok), ok)
    seen = f"{how}" + ", ".join(f"HTTP {k}={v}" for k, v in sorted(Counter(r.status for r in ok).items()))
    if len(ok) < len(results):
        seen += ("; " if ok else "") + ", ".join(f"{k}={v}" for k, v in sorted(Counter(r.result for r in results if r.result != "ok").items()))
    seen += _served_text(Counter(r.served_by for r in ok if r.served_by))
    if ok and ok[0].cert_names:
        seen += f"; certificate for {', '.join(ok[0].cert_names)}"
    if problems:
        return CheckOutcome(check, False, f"expected {want.result}: {problems[0]}", [seen, *problems[1:5]])
    return CheckOutcome(check, True, seen)


def _step(lab: Lab, check: Check) -> CheckOutcome:
    """A step (apply / delete / label): one change through the lab's one path. It passes when
    every reconciler did its part; the events are its details."""
    from netns_lab.errors import LabError

    try:
        events = lab.change(check.change, why=check.name)  # type: ignore[arg-type]
    except LabError as exc:
        return CheckOutcome(check, False, f"change failed: {exc}")
    return CheckOutcome(check, True, f"{len(events)} events", events[:20])


def runs_here(lab: Lab, check: Check) -> bool:
    """Whether this machine runs ``check``: every check in a lab on one machine; in a spread
    lab the ones whose source it holds (a matrix: from its own sources, see promises.matrix)."""
    return check.source is None or lab.netns_of(check.source) in lab.topology.namespaces


def run_checks(lab: Lab, checks: tuple[Check, ...], done: list[CheckOutcome] | None = None,
               on_outcome: Callable[[CheckOutcome], None] | None = None) -> list[CheckOutcome]:
    """Run ``checks`` in order. Each outcome is appended to ``done`` (returned; a new list if
    None) and passed to ``on_outcome`` as soon as it is known, so a run stopped half way
    (Ctrl-C, SIGTERM) still has, and has shown, the outcomes of the checks it completed."""
    runners = {"connect": _connect, "ping": _ping, "matrix": _matrix, "reachability": _reachability, "resolve": _resolve, "env": _env, "http": _http,
               "apply": _step, "delete": _step, "label": _step}
    out = [] if done is None else done
    for c in checks:
        t0 = time.monotonic()
        outcome = runners[c.action](lab, c)
        outcome.seconds = time.monotonic() - t0
        out.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return out


__all__ = ["CheckOutcome", "run_checks", "runs_here", "own_addresses"]
