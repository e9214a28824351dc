"""``reachability:`` checks: the upstream e2e NetworkPolicy tests' truth tables, read as
DESIGN.md writes them, and refused at load time when they cannot mean anything (a pod the
scenario does not have, a header that does not list ``pods`` in order, a cell that is not
``.``/``X``, a pod probing itself, a named port a destination pod lacks)."""

from __future__ import annotations

from typing import Any

from netns_lab.model import Check, Pod, Reachability
from netns_lab.scenario import k8s
from netns_lab.scenario.schema import INT_OR_STR, STR, ListOf, Obj
from netns_lab.scenario.yamlsrc import Source, join

REACHABILITY = Obj("netns-lab/v1 Check.reachability", {"pods": ListOf(STR), "port": INT_OR_STR, "protocol": STR})
CHECK = Obj("netns-lab/v1 Check (reachability)", {"name": STR, "reachability": REACHABILITY, "expect": STR})
MAX_PODS = 64  # 4,032 probes at once: far more than any upstream table (9 x 9)
CELLS = (".", "X")


def parse_reachability(src: Source, item: dict[str, Any], path: str, pods: dict[str, Pod]) -> Check:
    CHECK.check(src, item, path)
    rpath = join(path, "reachability")
    raw = item["reachability"]
    names = raw.get("pods") or []
    if len(names) < 2:
        raise src.error(join(rpath, "pods"), "Required value: at least two pods (a table of one pod probes nothing)")
    if len(names) > MAX_PODS:
        raise src.error(join(rpath, "pods"), f"Too many: {len(names)}: must have at most {MAX_PODS} items")
    keys = []
    for i, name in enumerate(names):
        key = name if "/" in name else f"default/{name}"
        if key not in pods:
            ns, _, pod = key.partition("/")
            raise src.error(join(join(rpath, "pods"), i), f'Not found: "{name}": no pod "{pod}" in namespace "{ns}"')
        if key in keys:
            raise src.error(join(join(rpath, "pods"), i), f'Duplicate value: "{name}"')
        keys.append(key)
    protocol = raw.get("protocol") or "tcp"
    if protocol not in ("tcp", "udp", "sctp"):
        raise src.error(join(rpath, "protocol"), f'Unsupported value: "{protocol}": supported values: "tcp", "udp", "sctp"')
    port = raw.get("port")
    if port is None:
        raise src.error(join(rpath, "port"), "Required value: a port number or a container port name")
    if isinstance(port, int):
        for msg in k8s.port_num(port):
            raise src.error(join(rpath, "port"), f"Invalid value: {port}: {msg}")
        for key in keys if protocol == "sctp" else ():  # SCTP only where a pod serves it (and the kernel has it)
            if not any(cp.container_port == port and cp.protocol == "SCTP" for c in pods[key].containers for cp in c.ports):
                raise src.error(join(rpath, "port"), f'Invalid value: {port}: pod "{key}" has no SCTP container port {port}')
    else:
        for msg in k8s.port_name(port):
            raise src.error(join(rpath, "port"), f'Invalid value: "{port}": {msg}')
        for key in keys:
            if pods[key].named_port(port, protocol.upper()) is None:
                raise src.error(join(rpath, "port"), f'Invalid value: "{port}": pod "{key}" has no {protocol.upper()} '
                                                     f'container port of that name')
    if not isinstance(item.get("expect"), str):
        raise src.error(join(path, "expect"), "Required value: the expected table (a header row, then one row per pod)")
    expected = parse_table(src, join(path, "expect"), item["expect"], names)
    name = item.get("name") or f"reachability {protocol}/{port} of {len(keys)} pods"
    return Check(name, "reachability", protocol=protocol, reachability=Reachability(tuple(keys), port, protocol, expected))


def parse_table(src: Source, path: str, text: str, names: list[str]) -> tuple[str, ...]:
    """The table's rows as strings of cells; the header and row labels must repeat ``names``."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    want = " ".join(names)
    if not lines or lines[0][1:] != names or lines[0][0] != "-":
        raise src.error(path, f'Invalid value: the header row must be "- {want}" (the pods, in order)')
    if len(lines) != len(names) + 1:
        raise src.error(path, f"Invalid value: {len(lines) - 1} rows: must have one row per pod ({len(names)})")
    rows = []
    for i, (name, cells) in enumerate(zip(names, lines[1:])):
        where = f"row {i + 1} ({name})"
        if cells[0] != name:
            raise src.error(path, f'Invalid value: {where} starts with "{cells[0]}": rows must follow the order of pods')
        if len(cells) != len(names) + 1:
            raise src.error(path, f"Invalid value: {where} has {len(cells) - 1} cells: must have {len(names)}")
        for j, cell in enumerate(cells[1:]):
            if i == j and cell != "-":
                raise src.error(path, f'Invalid value: {where}, column {name}: "{cell}": a pod to itself is never probed: write "-"')
            if i != j and cell not in CELLS:
                raise src.error(path, f'Invalid value: {where}, column {names[j]}: "{cell}": must be "." (connected) or "X" (blocked)')
        rows.append("".join(cells[1:]))
    return tuple(rows)
