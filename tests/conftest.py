"""Suite-wide guard: the host network namespace must be byte-for-byte unchanged.

A snapshot of links, addresses, routes, rules, iptables (nft and legacy), the nftables
ruleset and the relevant sysctls is taken before the first test and compared after the
last one; any difference fails the run. Nothing the lab creates may leak to the host.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/rp_filter",
    "net/ipv4/conf/default/rp_filter",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/ipv6/conf/all/disable_ipv6",
    "net/ipv6/conf/default/disable_ipv6",
)
_COUNTERS = re.compile(r"\[\d+:\d+\]")


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return f"<{cmd[0]} not installed>"
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [l for l in (out.stdout + out.stderr).splitlines() if not l.startswith("#")]
    return _COUNTERS.sub("[counters]", "\n".join(lines))


def host_snapshot() -> dict[str, str]:
    snap = {
        "links": _run(["ip", "-d", "-o", "link", "show"]),
        "addresses": _run(["ip", "-o", "addr", "show"]),
        "routes": _run(["ip", "route", "show", "table", "all"]),
        "rules": _run(["ip", "rule", "show"]),
        "neigh-proxy": _run(["ip", "neigh", "show", "proxy"]),
        "iptables-nft": _run(["iptables-nft-save"]),
        "iptables-legacy": _run(["iptables-legacy-save"]),
        "nft": _run(["nft", "list", "ruleset"]),
    }
    for key in SYSCTLS:
        try:
            with open(f"/proc/sys/{key}") as fh:
                snap[key] = fh.read().strip()
        except FileNotFoundError:
            snap[key] = "<absent>"
    return snap


@pytest.fixture(scope="session", autouse=True)
def host_namespace_unchanged() -> Iterator[None]:
    """Fails the session if the host's network state differs after the tests."""
    if os.geteuid() != 0:
        yield
        return
    before = host_snapshot()
    yield
    after = host_snapshot()
    changed = [k for k in before if before[k] != after[k]]
    if changed:
        diff = "\n".join(f"--- {k}\nbefore:\n{before[k]}\nafter:\n{after[k]}" for k in changed)
        pytest.fail(f"the host network namespace changed: {', '.join(changed)}\n{diff}", pytrace=False)


@pytest.fixture
def cleanup(lab) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    """Refs to delete after the test, from the module's shared ``lab`` (which goes back to its
    scenario); one already gone is refused by the API (NotFound) and skipped."""
    from netns_lab.errors import ScenarioError

    refs: list[str] = []
    yield refs
    for ref in refs:
        try:
            lab.delete(ref, grace_period=0)
        except ScenarioError:
            pass
