"""The lab's netexec process: every pod's servers (one per containerPort) and every node's
agent (kubelet's port, and kube-proxy's healthz with its per-Service health answers).

Its configuration is one file; a change is written whole and announced with SIGHUP, and the
sync returns once new pods answer, so the rules that follow never point at a pod that is not
serving yet.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from netns_lab import atomic
from netns_lab.controllers import loadbalancer
from netns_lab.controllers.topology import NODE_AGENT_PORT, PodPlan
from netns_lab.errors import RealizeError
from netns_lab.realize.hostinfo import require_sctp
from netns_lab.reconcile import Runtime, View, plural

SERVE_TIMEOUT = 5.0


class NodeAgents:
    name = "netexec"

    def __init__(self, rt: Runtime, serving: Callable[[PodPlan], bool]) -> None:
        self.rt = rt
        self.serving = serving  # does this pod answer on its first port (probed from its node)?
        self.config: dict[str, Any] | None = None  # as last written

    @property
    def path(self) -> str:
        assert self.rt.state is not None
        return os.path.join(self.rt.state.workdir, "netexec.json")

    def desired(self, view: View) -> dict[str, Any]:
        topo, st = view.topology, self.rt.state
        assert st is not None
        # both families' ports: an IPv6-only Service of a dual-stack lab has no IPv4 ports to count
        health = loadbalancer.health_answers(view.objects.services, view.ports + view.ports6, topo)
        targets: list[dict[str, Any]] = [
            {"netns": p.netns, "name": p.name, "ports": sorted({port for port, proto in p.ports if proto != "SCTP"}),
             **({"sctp": sorted({port for port, proto in p.ports if proto == "SCTP"})} if any(pr == "SCTP" for _, pr in p.ports) else {})}
            for p in topo.local_pods if p.ports and p.netexec
        ]
        targets += [
            {"netns": n.netns, "name": n.name, "ports": [NODE_AGENT_PORT, loadbalancer.KUBE_PROXY_HEALTHZ_PORT,
                                                      loadbalancer.KUBE_PROXY_STATUS_PORT],
             "health": health[n.name], "agent": True}
            for n in topo.local_nodes
        ]
        if any("sctp" in t for t in targets):  # a pod applied at run time: netexec would load SCTP, or fail
            require_sctp("serve")
        return {"lab": self.rt.name, "phase": "checked" if st.checked else st.phase, "proxyMode": st.proxy_mode,
                "families": list(topo.families), "targets": targets}

    def restore(self, view: View) -> None:
        self.config = self.desired(view)

    def sync(self, view: View) -> list[str]:
        if self.config is not None and view.untouched(lambda s: s.health_check_node_port is not None, pods=True):
            return []  # its targets are pods, its health answers are those Services' endpoints
        config = self.desired(view)
        if config == self.config and not view.full:
            return []
        before = {t["netns"] for t in (self.config or {}).get("targets", ()) if not t.get("agent")}
        atomic.write(self.path, json.dumps(config))
        first = self.config is None
        self.config = config
        if first or not self.rt.running("netexec"):
            self.rt.spawn("netexec", ["-m", "netns_lab.services.netexec", self.path])
            return ["netexec started"]
        self.rt.signal("netexec")
        # new pods (and, on a full sync, every pod: a repaired sandbox is a new namespace) serve before the rules follow
        new = [p for p in view.topology.local_pods if p.ports and p.netexec and (view.full or p.netns not in before)]
        for p in new:
            self._wait_serving(p)
        served = sum(1 for t in config["targets"] if not t.get("agent"))
        return [f"netexec reloaded: serving {plural(served, 'pod')}"]

    def _wait_serving(self, pod: PodPlan) -> None:
        deadline = time.monotonic() + SERVE_TIMEOUT
        while not self.serving(pod):
            if time.monotonic() > deadline:
                raise RealizeError(f"pod {pod.key}", "start serving", None, "netexec did not open its ports")
            time.sleep(0.02)
