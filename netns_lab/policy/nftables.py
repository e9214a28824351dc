"""NetworkPolicy as one nftables table per node, in the spirit of Calico's nftables mode:
a ``filter-FORWARD`` base chain (forward hook) dispatches each packet through verdict maps keyed by the pod's
address (``cali-from-wl-dispatch`` for the source pod's egress, ``cali-to-wl-dispatch`` for
the destination pod's ingress) to per-endpoint chains (``cali-fw-<iface>``,
``cali-tw-<iface>``), which jump to per-policy chains (``cali-pi-<hash>``,
``cali-po-<hash>``) whose rules match named sets of peer addresses (``cali40s-<hash>``,
intervals) and named ports (``cali40n-<hash>``: address . protocol . port). Chains carry Calico's
``filter-`` prefix; the maps are keyed by address, not interface (see policy/iptables.py).

A packet costs two map lookups and the rules of the policies that select its pods, however
many policies and pods the cluster has: sets and maps, not lists of rules. The whole table is
replaced in one ``nft -f`` transaction (``table``, ``delete table``, ``table {...}``).
Pure: text in, text out.
"""

from __future__ import annotations

from netns_lab.controllers.netpol import EGRESS, INGRESS, AddressSet, Match, NodePolicy
from netns_lab.policy import endpoint_chain, policy_chain, set_name

TABLE = "calico"
FAMILY = "ip"
ACCEPT_MARK = "0x00010000"
FROM_DISPATCH, TO_DISPATCH = "filter-cali-from-wl-dispatch", "filter-cali-to-wl-dispatch"


def _set_name(s: AddressSet) -> str:
    return set_name(s).replace(":", "-")  # Calico's nftables sets: the ipset name, ":" -> "-"


def _comment(text: str) -> str:
    return 'comment "' + text.replace('"', "'")[:120] + '"'


def _set(s: AddressSet) -> list[str]:
    if s.kind == "net":
        head = ["type ipv4_addr", "flags interval", "auto-merge"]
        elements = list(s.members)
    else:
        head = ["type ipv4_addr . inet_proto . inet_service"]
        elements = []
        for m in s.members:
            ip, _, rest = m.partition(",")
            proto, _, port = rest.partition(":")
            elements.append(f"{ip} . {proto} . {port}")
    body = [f"\t\t{h}" for h in head] + [f"\t\t{_comment(s.comment)}"]
    if elements:
        body.append("\t\telements = { " + ", ".join(elements) + " }")
    return [f"\tset {_set_name(s)} {{", *body, "\t}"]


def _match(m: Match, direction: str, sets: dict[str, AddressSet]) -> str:
    addr = "ip daddr" if direction == EGRESS else "ip saddr"
    parts = []
    if m.peer:
        parts.append(f"{addr} @{_set_name(sets[m.peer])}")
    if m.peer_not:
        parts.append(f"{addr} != @{_set_name(sets[m.peer_not])}")
    if m.protocol:
        parts.append(f"meta l4proto {m.protocol}")
    if m.ports:
        lo, hi = m.ports
        parts.append(f"th dport {lo}" if lo == hi else f"th dport {lo}-{hi}")
    if m.named:
        parts.append(f"ip daddr . meta l4proto . th dport @{_set_name(sets[m.named])}")
    return " ".join(parts)


def render(policy: NodePolicy) -> str:
    """The node's policy table, whole; "" when no pod of the node is isolated."""
    if policy.empty:
        return ""
    sets = {s.name: s for s in policy.sets}
    out = [f"table {FAMILY} {TABLE} {{", f"\t{_comment('NetworkPolicy (netns-lab, Calico layout)')}"]
    for s in policy.sets:
        out += _set(s)
    for name, direction in ((FROM_DISPATCH, EGRESS), (TO_DISPATCH, INGRESS)):
        elements = [f"{ep.ip} : jump filter-{endpoint_chain(ep.iface, direction)}" for ep in policy.endpoints
                    if (ep.egress if direction == EGRESS else ep.ingress) is not None]
        out += [f"\tmap {name} {{", "\t\ttype ipv4_addr : verdict"]
        if elements:
            out.append("\t\telements = { " + ", ".join(elements) + " }")
        out.append("\t}")
    out += [
        "\tchain filter-FORWARD {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f"\t\tmeta mark set meta mark & 0xfff1ffff {_comment('clear the policy marks')}",
        f"\t\tip saddr vmap @{FROM_DISPATCH}",
        f"\t\tip daddr vmap @{TO_DISPATCH}",
        "\t}",
    ]
    by_id = {c.id: c for c in policy.chains}
    for ep in policy.endpoints:
        for direction, ids in ((INGRESS, ep.ingress), (EGRESS, ep.egress)):
            if ids is None:
                continue
            out += [f"\tchain filter-{endpoint_chain(ep.iface, direction)} {{", f"\t\t{_comment(ep.pod)}",
                    "\t\tct state established,related accept", "\t\tct state invalid drop",
                    "\t\tmeta mark set meta mark & 0xfffeffff"]
            for cid in ids:
                out += [f"\t\tjump filter-{policy_chain(by_id[cid])}",
                        f"\t\tmeta mark & {ACCEPT_MARK} == {ACCEPT_MARK} return {_comment('Return if policy accepted')}"]
            out += [f"\t\tcounter drop {_comment('Drop if no policies passed packet')}", "\t}"]
    for chain in policy.chains:
        out.append(f"\tchain filter-{policy_chain(chain)} {{")
        for m in chain.matches:
            text = _match(m, chain.direction, sets)
            out.append(f"\t\t{text + ' ' if text else ''}counter meta mark set meta mark | {ACCEPT_MARK} return "
                       f"{_comment(f'{chain.policy} {chain.direction.lower()}')}")
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"
