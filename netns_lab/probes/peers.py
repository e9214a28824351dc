"""The machines of a spread lab wait for one another, through the lab's own network.

Each machine builds its share and runs the checks whose source it holds; a check towards a pod
on another machine is only meaningful once that machine is up, and a machine must not tear
down while the others still probe it. There is no API server to ask, so each machine's node
agents (netexec) answer ``GET /netns-lab/phase`` and the others poll that from one of their
own nodes, across the node network and the trunk: seeing the answer also proves the path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from netns_lab.controllers.topology import HostPlan
from netns_lab.errors import LabError
from netns_lab.lab import Lab

POLL = 0.5


def phase_of(lab: Lab, host: HostPlan) -> str | None:
    """What ``host`` says (``building``, ``up``, ``checked``), or None when nothing answers."""
    index = lab.topology.hosts.index(host)
    return lab.agent_phase(next(n for n in lab.topology.nodes if n.host == index))


def wait_for(lab: Lab, phases: tuple[str, ...], timeout: float, gone_ok: bool = False,
             say: Callable[[str], None] = lambda _m: None) -> None:
    """Return once every other machine is in one of ``phases`` (or, with ``gone_ok``, no
    longer answers: it has finished and torn down). Raises LabError at ``timeout``."""
    topo = lab.topology
    waiting = [h for i, h in enumerate(topo.hosts) if i != topo.host]
    deadline = time.monotonic() + timeout
    told: set[str] = set()
    while waiting:
        for host in list(waiting):
            phase = phase_of(lab, host)
            if phase in phases or (gone_ok and phase is None):
                waiting.remove(host)
            elif host.name not in told:
                told.add(host.name)
                say(f"waiting for {host.name} ({host.ip}) to be {' or '.join(phases)}: it says {phase or 'nothing yet'}")
        if waiting and time.monotonic() > deadline:
            names = ", ".join(f"{h.name} ({h.ip})" for h in waiting)
            raise LabError(f"spread lab {lab.name}: {names} not {' or '.join(phases)} after {timeout:.0f}s")
        if waiting:
            time.sleep(POLL)


__all__ = ["phase_of", "wait_for"]
