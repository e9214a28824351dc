"""The ingress controller (real nginx in ``ingress-nginx/ingress-nginx-controller``), as
ingress-nginx runs it: the rules (hosts, paths, TLS) are nginx.conf, and a change to them is
a graceful reload (old workers finish their requests); the endpoints behind each backend are
not in nginx.conf but in the Lua balancer's shared memory, and a change to them is a POST to
nginx's configuration endpoint on the pod's loopback (the supervisor in the pod makes it),
never a reload. Both are counted: ``reloaded`` and ``dynamic`` in the ingress directory."""

from __future__ import annotations

import json
import os
import signal

from netns_lab import atomic
from netns_lab.controllers import ingress as ingress_ctl
from netns_lab.controllers.system import NGINX, served_by
from netns_lab.model import Ingress
from netns_lab.reconcile import Runtime, View, count, signal_and_wait

CONTROLLER_POD = f"{NGINX.namespace}/{NGINX.pod}"
RELOAD_TIMEOUT = 10.0
BACKENDS = "backends.json"  # what the supervisor POSTs (root's, 0600: nginx never reads it)
RELOADED, DYNAMIC, REFUSED = "reloaded", "dynamic", "refused"  # counters the supervisor bumps


def _sizes(backends: list[dict[str, object]] | None) -> dict[str, int]:
    return {str(b["name"]): len(b["endpoints"]) for b in backends or []}  # type: ignore[arg-type]


class IngressNginx:
    name = "ingress-nginx"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.conf: tuple[str, dict[str, str]] | None = None  # nginx.conf and its certificate files, as last written
        self.backends: list[dict[str, object]] | None = None  # as last posted

    @property
    def dir(self) -> str:
        assert self.rt.state is not None
        return os.path.join(self.rt.state.workdir, "ingress")

    @staticmethod
    def ingresses(view: View) -> tuple[Ingress, ...]:
        return served_by(NGINX, view.objects.ingresses, view.objects.ingress_classes)

    def render(self, view: View) -> tuple[str, dict[str, str]]:
        o = view.objects
        return ingress_ctl.render(self.ingresses(view), o.services, o.pods, view.topology, o.secrets, self.dir)

    def desired_backends(self, view: View) -> list[dict[str, object]]:
        o = view.objects
        return ingress_ctl.backends(self.ingresses(view), o.services, o.pods, view.topology)

    def restore(self, view: View) -> None:
        if self.rt.running("ingress"):
            self.conf = self.render(view)
            self.backends = self.desired_backends(view)

    def sync(self, view: View) -> list[str]:
        pod = view.topology.local_pod(CONTROLLER_POD)
        if pod is None or (not self.ingresses(view) and not self.rt.running("ingress")):
            return []
        rendered = self.render(view)
        backends = self.desired_backends(view)
        rules = rendered != self.conf or view.full  # a replaced TLS Secret changes the files only
        if not rules and backends == self.backends:
            return []
        os.makedirs(os.path.join(self.dir, "certs"), exist_ok=True)
        atomic.write(os.path.join(self.dir, BACKENDS), json.dumps(backends, indent=1), 0o600)
        if rules:
            conf, files = rendered
            for path, text in files.items():
                atomic.write(path, text, 0o600)  # private keys among them
            atomic.write(os.path.join(self.dir, "nginx.conf"), conf)
        before = self.backends
        try:
            if not self.rt.running("ingress"):
                self.rt.spawn("ingress", ["-m", "netns_lab.services.ingress", f"/run/netns/{pod.netns}", self.dir])
                events = [f"nginx started in {pod.key} ({len(self.ingresses(view))} Ingresses)"]
            elif rules:
                self._signal_and_wait(RELOADED, signal.SIGHUP)
                events = ["nginx reloaded (graceful)"]
            else:
                self._signal_and_wait(DYNAMIC, signal.SIGUSR1)
                old, new = _sizes(before), _sizes(backends)
                changed = ", ".join(f"{n} {old.get(n, 0)} -> {new.get(n, 0)}" for n in sorted(old.keys() | new.keys())
                                    if old.get(n) != new.get(n))
                events = [f"backends updated (dynamic, no reload): {changed or 'same sizes, other endpoints'}"]
        except BaseException:  # what nginx holds is not known: the next sync reloads and posts again
            self.conf = self.backends = None
            raise
        self.conf, self.backends = rendered, backends
        return events

    def _signal_and_wait(self, counter: str, sig: signal.Signals) -> None:
        """Tell the supervisor, and return once it says it is done: after a reload, nginx's new
        workers serve and the old ones accept nothing; after a POST, every worker will balance
        over the new endpoints from its next request on (so a pod is removed only after). The
        supervisor counts what nginx refused too: that is an error here, not a silent success."""
        what = "reload" if counter == RELOADED else "update backends"
        signal_and_wait(self.rt, "ingress", sig, self.dir, counter, refused=REFUSED, timeout=RELOAD_TIMEOUT,
                        what=("ingress-nginx", what), refusal="nginx refused it, and keeps what it had", log="ingress.log")

    def reloads(self) -> int:
        return count(self.dir, RELOADED)

    def dynamic_updates(self) -> int:
        return count(self.dir, DYNAMIC)
