"""The emulated cloud load balancer: it exists once a Service of type LoadBalancer does
(as a cloud provisions one), and its configuration (listeners, nodes, health checks)
follows those Services; a change is written and announced with SIGHUP."""

from __future__ import annotations

import json
import os
from typing import Any

from netns_lab import atomic
from netns_lab.controllers import loadbalancer
from netns_lab.reconcile import Runtime, View


class CloudLB:
    name = "cloud-lb"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.config: dict[str, Any] | None = None

    @property
    def path(self) -> str:
        assert self.rt.state is not None
        return os.path.join(self.rt.state.workdir, "cloudlb.json")

    @property
    def status_path(self) -> str:
        assert self.rt.state is not None
        return os.path.join(self.rt.state.workdir, "cloudlb-status.json")

    def desired(self, view: View) -> dict[str, Any]:
        return loadbalancer.balancer_config(view.objects.services, view.topology, self.status_path)

    def restore(self, view: View) -> None:
        if self.rt.running("cloudlb"):
            self.config = self.desired(view)

    def sync(self, view: View) -> list[str]:
        """Nothing in a lab whose load-balancer IPs are announced by BGP (reconcile.bgp)."""
        if view.topology.load_balancer != "cloud" or view.untouched(lambda s: s.type == "LoadBalancer"):
            return []  # it exists for, and its configuration reads, LoadBalancer Services only
        wanted = any(s.type == "LoadBalancer" and s.load_balancer_ips for s in view.objects.services)
        if not view.topology.has_outside or (not wanted and not self.rt.running("cloudlb")):
            return []
        config = self.desired(view)
        if config == self.config and not view.full:
            return []
        self.config = config
        atomic.write(self.path, json.dumps(config))
        if not self.rt.running("cloudlb"):
            self.rt.spawn("cloudlb", ["-m", "netns_lab.services.cloudlb", self.path])
            return ["cloud load balancer provisioned"]
        self.rt.signal("cloudlb")
        ips = sorted(ip for s in view.objects.services for ip in s.load_balancer_ips)
        return [f"cloud load balancer updated ({len(ips)} load-balancer IPs)"]
