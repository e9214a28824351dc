"""The HAProxy ingress controller (real HAProxy in ``haproxy-ingress/haproxy-ingress-controller``),
as haproxy-ingress drives it: the Ingresses of its classes are ``haproxy.cfg``, and a change
of hosts, paths, TLS or of the set of backends is a seamless reload; an endpoint change only
fills or empties server slots through HAProxy's runtime API (a unix socket in the
controller's directory, which the lab opens from the host: no namespace is entered), with no
reload, unless a backend outgrows its slots (then a reload with more). Both are counted:
``reloaded`` (the supervisor) and ``dynamic`` (here)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat

from netns_lab import atomic
from netns_lab.controllers import haproxy as ctl
from netns_lab.controllers.system import HAPROXY, served_by
from netns_lab.errors import RealizeError
from netns_lab.model import Ingress
from netns_lab.reconcile import Runtime, View, count, signal_and_wait

CONTROLLER_POD = f"{HAPROXY.namespace}/{HAPROXY.pod}"
ROLE = "haproxy"
RELOAD_TIMEOUT = 15.0
SLOTS = "slots.json"  # what every slot serves, for a process that attaches later


def runtime_api(sock_path: str, command: str, ok: tuple[str, ...]) -> str:
    """One command for the current worker, through the master's CLI socket; its answer must
    start with one of ``ok`` (HAProxy answers errors in prose, in many wordings: anything
    else is one). The socket lives in a directory of HAProxy's user: it must be a socket, not
    a link to one elsewhere."""
    st = os.lstat(sock_path)
    if not stat.S_ISSOCK(st.st_mode):
        raise RealizeError("haproxy-ingress", command, None, f"{sock_path} is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(sock_path)
        s.sendall(b"@1 " + command.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)  # the master's CLI answers, and closes, once the command is whole
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks).decode(errors="replace").strip()
    if not any(answer.startswith(o) if o else answer == "" for o in ok):
        raise RealizeError("haproxy-ingress", command, None, answer or "no answer")
    return answer


class HAProxyIngress:
    name = "haproxy-ingress"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.shape: tuple[str, dict[str, str]] | None = None  # the configuration with every slot blank, as last loaded
        self.slots: dict[str, ctl.Slots] = {}  # what every slot serves now

    @property
    def dir(self) -> str:
        assert self.rt.state is not None
        return os.path.join(self.rt.state.workdir, "haproxy")

    @staticmethod
    def ingresses(view: View) -> tuple[Ingress, ...]:
        return served_by(HAPROXY, view.objects.ingresses, view.objects.ingress_classes)

    def _render(self, view: View, slots: dict[str, ctl.Slots]) -> tuple[str, dict[str, str]]:
        return ctl.render(self.ingresses(view), slots, view.objects.secrets, self.dir)

    def _shape(self, view: View, slots: dict[str, ctl.Slots]) -> tuple[str, dict[str, str]]:
        """The configuration as far as a reload matters: every slot blank."""
        return self._render(view, {n: (None,) * len(s) for n, s in slots.items()})

    def restore(self, view: View) -> None:
        if self.rt.running(ROLE):
            try:
                with open(os.path.join(self.dir, SLOTS)) as fh:
                    raw = json.load(fh)
                self.slots = {n: tuple(tuple(x) if x else None for x in s) for n, s in raw.items()}  # type: ignore[misc]
            except (OSError, ValueError):
                self.slots = {}
            self.shape = self._shape(view, self.slots)

    def sync(self, view: View) -> list[str]:
        pod = view.topology.local_pod(CONTROLLER_POD)
        ings = self.ingresses(view)
        if pod is None or (not ings and not self.rt.running(ROLE)):
            return []
        o = view.objects
        wanted = ctl.backends(ings, o.services, o.pods, view.topology)
        slots: dict[str, ctl.Slots] = {}
        changes: list[tuple[str, int, tuple[str, int] | None]] = []
        for name, eps in wanted.items():
            planned = ctl.slot_changes(self.slots[name], eps) if name in self.slots else None
            if planned is None:  # a new backend, or one that outgrew its slots: a reload gives it enough
                slots[name] = ctl.fresh_slots(eps)
            else:
                slots[name], moved = planned
                changes += [(name, i, ep) for i, ep in moved]
        shape = self._shape(view, slots)
        reload = shape != self.shape or view.full or any(n not in self.slots for n in wanted)
        if not reload and not changes:
            return []
        sizes = {n: sum(x is not None for x in s) for n, s in self.slots.items()}
        # Always written, slots as they will be: a HAProxy started (or reloaded) later reads them.
        conf, files = self._render(view, slots)
        os.makedirs(os.path.join(self.dir, ctl.CERTS), exist_ok=True)
        for path, text in files.items():
            atomic.write(path, text, 0o600)
        atomic.write(os.path.join(self.dir, "haproxy.cfg"), conf)
        try:
            if not self.rt.running(ROLE):
                self.rt.spawn(ROLE, ["-m", "netns_lab.services.haproxy", f"/run/netns/{pod.netns}", self.dir])
                events = [f"haproxy started in {pod.key} ({len(ings)} Ingresses)"]
            elif reload:
                self._reload()
                events = ["haproxy reloaded (seamless)"]
            else:
                self._fill(changes)
                changed = ", ".join(f"{n} {sizes.get(n, 0)} -> {sum(x is not None for x in slots[n])}" for n in sorted({c[0] for c in changes}))
                events = [f"backends updated (runtime API, no reload): {changed} endpoints ({len(changes)} slots changed)"]
        except BaseException:  # what HAProxy holds is not known: the next sync reloads it from the file
            self.slots, self.shape = {}, None
            atomic.write(os.path.join(self.dir, SLOTS), "{}")
            raise
        self.slots, self.shape = slots, shape
        atomic.write(os.path.join(self.dir, SLOTS), json.dumps(slots))
        return events

    def _reload(self) -> None:
        """SIGHUP to the supervisor; back once the new worker serves, or raise if HAProxy refused
        the configuration (the old one keeps serving)."""
        signal_and_wait(self.rt, ROLE, signal.SIGHUP, self.dir, "reloaded", refused="refused", timeout=RELOAD_TIMEOUT,
                        what=("haproxy-ingress", "reload"), refusal="haproxy -c refused the new configuration",
                        log="haproxy.log")

    def _fill(self, changes: list[tuple[str, int, tuple[str, int] | None]]) -> None:
        """Empty slots first, then fill, through the master's CLI to the current worker (``@1``):
        an old worker still finishing its connections after a reload never gets them."""
        api = os.path.join(self.dir, ctl.LOGS, ctl.MASTER_SOCKET)
        for name, i, ep in sorted(changes, key=lambda c: c[2] is not None):
            server = f"{name}/s{i + 1}"
            if ep is None:
                runtime_api(api, f"set server {server} state maint", ("",))
            else:
                ctl.server_address(*ep)  # an IP address and a port number, or UnsafeValue
                runtime_api(api, f"set server {server} addr {ep[0]} port {ep[1]}", ("IP changed from", "no need to change"))
                runtime_api(api, f"set server {server} state ready", ("",))
        updates = count(self.dir, "dynamic") + 1
        atomic.write(os.path.join(self.dir, "dynamic"), str(updates))

    def reloads(self) -> int:
        return count(self.dir, "reloaded")

    def dynamic_updates(self) -> int:
        return count(self.dir, "dynamic")
