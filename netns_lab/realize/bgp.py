"""Talk to the lab's BIRDs and read what they installed (the kernel side of BGP).

``birdc`` speaks to one BIRD's control socket (a file under the lab's state directory, so no
namespace needs entering); the routes BIRD installed are read from the kernel of the
speaker's namespace (``proto bird``), which is what forwards packets, not BIRD's own view.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address

from netns_lab.errors import RealizeError

BIRDC_TIMEOUT = 10.0


def birdc(sock: str, *command: str) -> str:
    """One ``birdc -s SOCK COMMAND`` (restricted to what the lab asks: show and configure)."""
    try:
        proc = subprocess.run(["birdc", "-s", sock, *command], capture_output=True, text=True, timeout=BIRDC_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RealizeError(sock, " ".join(command), None, f"birdc did not answer within {BIRDC_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        raise RealizeError(sock, " ".join(command), None, (proc.stderr or proc.stdout).strip() or f"exit {proc.returncode}")
    return proc.stdout


def configure(sock: str, retry_s: float = 5.0) -> None:
    """Make a running BIRD read its (rewritten) configuration: sessions stay up; routes that
    are no longer announced are withdrawn, new ones announced. A BIRD being restarted by its
    supervisor (its socket not there yet) is asked again for up to ``retry_s``; one that is
    still busy with a reconfiguration queues this one, which is as good."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            out = birdc(sock, "configure")
            break
        except RealizeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    if not any(ok in out for ok in ("Reconfigured", "Reconfiguration in progress", "queueing new config")):
        raise RealizeError(sock, "configure", None, out.strip().replace("\n", " | "))


def kernel_routes(netns: str) -> dict[str, frozenset[IPv4Address]]:
    """prefix -> next hops of the routes BIRD installed in ``netns``'s main table."""
    proc = subprocess.run(["ip", "-n", netns, "-j", "-4", "route", "show", "proto", "bird"], capture_output=True, text=True,
                          timeout=10)
    if proc.returncode != 0:
        raise RealizeError(netns, "list routes", None, proc.stderr.strip())
    out: dict[str, frozenset[IPv4Address]] = {}
    for r in json.loads(proc.stdout or "[]"):
        dst = "0.0.0.0/0" if r["dst"] == "default" else r["dst"] if "/" in r["dst"] else f"{r['dst']}/32"
        hops = [h["gateway"] for h in r.get("nexthops", []) if "gateway" in h] or ([r["gateway"]] if "gateway" in r else [])
        out[dst] = frozenset(IPv4Address(h) for h in hops)
    return out


@dataclass(frozen=True)
class Session:
    """One BGP protocol of one BIRD, as ``birdc show protocols all`` reports it."""

    name: str
    state: str  # BIRD's protocol state: up, start, down...
    since: str
    info: str  # the BGP state (Established, Active, Connect...) and the last error
    neighbor: str
    imported: int
    exported: int

    @property
    def established(self) -> bool:
        return self.info.split()[0:1] == ["Established"]


_HEADER = re.compile(r"^(\S+)\s+BGP\s+---\s+(\S+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|\S+)\s*(.*)$")
_ROUTES = re.compile(r"Routes:\s+(\d+) imported,(?: \d+ filtered,)? (\d+) exported")
_NEIGHBOR = re.compile(r"Neighbor address:\s+(\S+)")


def sessions(sock: str) -> list[Session]:
    """Every BGP session of the BIRD behind ``sock``, parsed from ``show protocols all``."""
    out: list[Session] = []
    current: dict[str, object] | None = None
    for line in birdc(sock, "show", "protocols", "all").splitlines():
        m = _HEADER.match(line)
        if m:
            if current is not None:
                out.append(Session(**current))  # type: ignore[arg-type]
            current = {"name": m[1], "state": m[2], "since": m[3], "info": m[4].strip(), "neighbor": "", "imported": 0,
                       "exported": 0}
            continue
        if current is None:
            continue
        if not line.strip() or (line[:1] not in " \t" and not line.startswith(("Name", "BIRD"))):
            out.append(Session(**current))  # type: ignore[arg-type]
            current = None
            continue
        if (n := _NEIGHBOR.search(line)) is not None:
            current["neighbor"] = n[1]
        elif (r := _ROUTES.search(line)) is not None:
            current["imported"], current["exported"] = int(r[1]), int(r[2])
    if current is not None:
        out.append(Session(**current))  # type: ignore[arg-type]
    return out


