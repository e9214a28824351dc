"""The ownership record of each lab: ``/run/netns-lab/<lab>.json``.

It is written *before* anything is created and lists everything the lab will own, so a build
killed at any instant (SIGKILL included) leaves a record from which ``clean`` removes exactly
what this lab made, and nothing that merely looks like it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

STATE_DIR = os.environ.get("NETNS_LAB_STATE_DIR", "/run/netns-lab")


@dataclass
class LabState:
    lab: str
    instance: str  # a fresh token per `up`: processes carry it in their environment
    scenario: str
    phase: str = "building"  # building | up
    checked: bool = False  # run-scenario ran this machine's checks (spread labs wait on each other for it)
    namespaces: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)  # role, pid, start
    topology: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    proxy_mode: str = "iptables"
    iptables_backend: str = "nft"
    ipvs_scheduler: str = "rr"
    ipvs_legacy_ping: bool = False
    pods: list[dict[str, Any]] = field(default_factory=list)  # the live model (model_io)
    services: list[dict[str, Any]] = field(default_factory=list)
    ingresses: list[dict[str, Any]] = field(default_factory=list)
    secrets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return state_path(self.lab)

    @property
    def workdir(self) -> str:
        return os.path.join(STATE_DIR, self.lab)

    def save(self) -> None:
        os.makedirs(STATE_DIR, exist_ok=True)
        tmp = f"{self.path}.tmp.{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(json.dumps(self.__dict__, separators=(",", ":")))  # dumps: the C encoder
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)  # atomic: a reader sees the old or the new record, whole


def state_path(lab: str) -> str:
    return os.path.join(STATE_DIR, f"{lab}.json")


def load(lab: str) -> LabState | None:
    try:
        with open(state_path(lab)) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return LabState(lab=lab, instance="", scenario="", phase="corrupt")
    return LabState(**data)


def all_labs() -> list[str]:
    if not os.path.isdir(STATE_DIR):
        return []
    return sorted(f[: -len(".json")] for f in os.listdir(STATE_DIR) if f.endswith(".json"))
