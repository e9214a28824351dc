"""What each change did, as ``kubectl get events`` reads: one JSON line per event in the
lab's ``events.jsonl`` (under its state directory), appended as the change completes.

``invoke events LAB [--follow]`` prints them. A line holds the time, the change that caused
it (``apply Service shop/web``) and what one reconciler did about it (``kube-proxy: rules
synced on node-1, node-2 (nftables, partial sync, 2 transactions, 9 ms)``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

FILE = "events.jsonl"


def describe(action: Any) -> str:
    """``apply Service shop/web``, ``delete pod/x/b``, ``label pod/x/b a=1 c-``, ``pod-ready pod/a=false``."""
    from netns_lab.scenario.admission import Apply, Delete, Expire, Label

    if isinstance(action, Apply):
        m = action.manifest if isinstance(action.manifest, dict) else {}
        meta = m.get("metadata") if isinstance(m.get("metadata"), dict) else {}
        ns = "" if m.get("kind") in ("Namespace", "IngressClass") else f"{meta.get('namespace') or 'default'}/"
        return f"apply {m.get('kind')} {ns}{meta.get('name')}"
    if isinstance(action, Delete):
        return f"delete {action.ref}" + (f" --grace-period {action.grace}" if action.grace is not None else "")
    if isinstance(action, Expire):
        return "expire terminating pods"
    if isinstance(action, Label):
        return f"label {action.ref} " + " ".join(f"{k}={v}" if v is not None else f"{k}-" for k, v in action.labels)
    return f"pod-ready {action.ref}={'true' if action.ready else 'false'}"


def describe_all(actions: Any) -> str:
    """Several actions in one line, a verb said once per run of it: ``apply Namespace shop,
    Pod shop/cart``, ``delete pod/a, pod/b``; how a change is named in events and reports."""
    out: list[str] = []
    verb = ""
    for text in map(describe, actions):
        first, _, rest = text.partition(" ")
        out.append(rest if first == verb else text)
        verb = first
    return ", ".join(out)


def object_changes(before: Any, after: Any) -> list[str]:
    """``Pod default/web-4 created``, ``Service default/web replaced``: what the store now holds
    differently (the API server's side of a change; the reconcilers' events follow it)."""
    from netns_lab.store import KINDS

    out = []
    for kind in KINDS:
        for key, (old, new) in sorted(before.changes(after, kind).items()):
            what = "created" if old is None else "deleted" if new is None else "replaced"
            out.append(f"{kind.name} {key} {what}")
    return out


def log_events(workdir: str, cause: str, events: list[str]) -> None:
    now = time.time()
    with open(os.path.join(workdir, FILE), "a") as fh:
        for e in events:
            fh.write(json.dumps({"time": now, "cause": cause, "event": e}) + "\n")


def read(workdir: str, follow: bool = False, poll: float = 0.2) -> Iterator[dict[str, Any]]:
    """Every event so far; with ``follow``, then every new one as it is written (until the
    lab's directory goes: the lab is down)."""
    path = os.path.join(workdir, FILE)
    pos = 0
    while True:
        try:
            with open(path) as fh:
                fh.seek(pos)
                while True:
                    line = fh.readline()
                    if not line.endswith("\n"):
                        break  # a line being written: read it whole next time
                    pos += len(line.encode())
                    yield json.loads(line)
        except FileNotFoundError:
            if not follow or not os.path.isdir(workdir):
                return
        if not follow or not os.path.isdir(workdir):
            return
        time.sleep(poll)


def format_event(e: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(e["time"])) + f".{int(e['time'] * 1000) % 1000:03d}"
    return f"{stamp}  {e['cause']}: {e['event']}"
