"""The ingress controller (real nginx in ``ingress-nginx/ingress-nginx-controller``): its
configuration follows the Ingresses, their Services' endpoints and their TLS Secrets; a
change is written and nginx reloads gracefully (old workers finish their requests)."""

from __future__ import annotations

import os
import time

from netns_lab import atomic
from netns_lab.controllers import ingress as ingress_ctl
from netns_lab.reconcile import Runtime, View

CONTROLLER_POD = "ingress-nginx/ingress-nginx-controller"
RELOAD_TIMEOUT = 10.0


class IngressNginx:
    name = "ingress-nginx"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.conf: tuple[str, dict[str, str]] | None = None  # nginx.conf and its certificate files, as last written

    @property
    def dir(self) -> str:
        assert self.rt.state is not None
        return os.path.join(self.rt.state.workdir, "ingress")

    def render(self, view: View) -> tuple[str, dict[str, str]]:
        o = view.objects
        return ingress_ctl.render(o.ingresses, o.services, o.pods, view.topology, o.secrets, self.dir)

    def restore(self, view: View) -> None:
        if self.rt.running("ingress"):
            self.conf = self.render(view)

    def sync(self, view: View) -> list[str]:
        pod = view.topology.local_pod(CONTROLLER_POD)
        if pod is None or (not view.objects.ingresses and not self.rt.running("ingress")):
            return []
        conf, files = rendered = self.render(view)
        if rendered == self.conf and not view.full:  # a replaced TLS Secret changes the files only
            return []
        os.makedirs(os.path.join(self.dir, "certs"), exist_ok=True)
        for path, text in files.items():
            atomic.write(path, text, 0o600)  # private keys among them
        atomic.write(os.path.join(self.dir, "nginx.conf"), conf)
        self.conf = rendered
        if not self.rt.running("ingress"):
            self.rt.spawn("ingress", ["-m", "netns_lab.services.ingress", f"/run/netns/{pod.netns}", self.dir])
            return [f"nginx started in {pod.key} ({len(view.objects.ingresses)} Ingresses)"]
        before = self.reloads()
        self.rt.signal("ingress")
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while self.reloads() <= before and time.monotonic() < deadline:
            time.sleep(0.01)
        return ["nginx reloaded (graceful)"]

    def reloads(self) -> int:
        try:
            with open(os.path.join(self.dir, "reloaded")) as fh:
                return int(fh.read() or 0)
        except (OSError, ValueError):
            return 0
