"""Run a ``reachability:`` truth table: one new connection (TCP) or datagram exchange (UDP)
from every source pod to every other pod's address, all at once (72 probes for 9 pods),
with the upstream e2e tests' 1 s timeout. A cell expected connected but seen blocked is probed
again (up to :data:`TRIES` times in all), as upstream's prober retries; a cell that connected
where a block was expected is reported at once (a policy change is complete when its step
returns, so that is a leak, not a timing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from netns_lab.model import Reachability
from netns_lab.probes.connect import Probe, run_probes
from netns_lab.store import KINDS

if TYPE_CHECKING:
    from netns_lab.lab import Lab

TIMEOUT = 1.0
TRIES = 3


def _probe(lab: "Lab", table: Reachability, i: int, j: int) -> Probe | None:
    src, dst = table.pods[i], table.pods[j]
    port = table.port
    if isinstance(port, str):
        pod = lab.objects.get(KINDS[1], dst)
        port = None if pod is None else pod.named_port(port, table.protocol.upper())
        if port is None:
            return None  # the destination lost that port name: blocked, as no connection can be made
    return Probe(lab.topology.pod(src).netns, str(lab.topology.pod(dst).ip), port, table.protocol)


def observe(lab: "Lab", table: Reachability) -> tuple[str, ...]:
    """The observed table, rows as strings of ``.``/``X``/``-``."""
    n = len(table.pods)
    cells = [["-" if i == j else "?" for j in range(n)] for i in range(n)]
    todo = [(i, j) for i in range(n) for j in range(n) if i != j]
    for attempt in range(TRIES):
        probes = {(i, j): _probe(lab, table, i, j) for i, j in todo}
        runnable = [(ij, p) for ij, p in probes.items() if p is not None]
        results = run_probes([p for _ij, p in runnable], timeout=TIMEOUT)
        for (i, j), res in zip((ij for ij, _p in runnable), results):
            cells[i][j] = "." if res.result == "ok" else "X"
        for (i, j), p in probes.items():
            if p is None:
                cells[i][j] = "X"
        # only a cell expected connected and seen blocked is probed again (a lost SYN, a slow
        # server); a connection that was made where a block was expected is a leak, never retried
        todo = [(i, j) for i, j in todo if cells[i][j] == "X" and table.expected[i][j] == "."]
        if not todo:
            break
    return tuple("".join(row) for row in cells)


def render(pods: tuple[str, ...], rows: tuple[str, ...]) -> list[str]:
    """A table as DESIGN.md writes it, columns aligned."""
    width = max(len(p) for p in pods) + 1
    out = ["-".ljust(width) + " ".join(p.ljust(width - 1) for p in pods).rstrip()]
    for p, row in zip(pods, rows):
        out.append(p.ljust(width) + " ".join(c.ljust(width - 1) for c in row).rstrip())
    return out


def difference(expected: tuple[str, ...], observed: tuple[str, ...]) -> tuple[str, ...]:
    """Upstream's comparison table: ``.`` where they agree, ``X`` where they do not."""
    return tuple("".join("-" if e == "-" else ("." if e == o else "X") for e, o in zip(er, orow))
                 for er, orow in zip(expected, observed))
