"""NetworkPolicy as iptables + ipset rules in Calico's (Felix's) layout, so that
``iptables-save`` on a node reads like a Calico node's:

* ``FORWARD`` jumps to ``cali-FORWARD``, which clears the accept mark, sends the packet
  through ``cali-from-wl-dispatch`` (egress of the source pod) and ``cali-to-wl-dispatch``
  (ingress of the destination pod), and accepts what a policy explicitly accepted;
* each isolated pod has ``cali-fw-<iface>`` (from the workload: egress) and/or
  ``cali-tw-<iface>`` (to the workload: ingress): conntrack accepts replies, drops invalid
  packets, then each policy's chain in turn, "Return if policy accepted", and the tail
  "Drop if no policies passed packet";
* each policy has ``cali-pi-<hash>`` (ingress) / ``cali-po-<hash>`` (egress): one line per
  allowed (peer, port), setting the accept mark, then returning when it is set;
* peers are ipsets ``cali40s:<hash>`` (hash:net), named ports ``cali40n:<hash>``
  (hash:ip,port, matched on the destination address and port).

One difference, on purpose: Calico routes each pod through its own ``cali*`` veth and
dispatches on the interface; the lab's pods hang off flannel's bridge (``cni0``), where the
routing interface says nothing about the pod, so dispatch is on the pod's address (the
chains keep the pod's veth in their names). Pure: text in, text out.
"""

from __future__ import annotations

from netns_lab.controllers.netpol import EGRESS, INGRESS, AddressSet, Match, NodePolicy
from netns_lab.policy import endpoint_chain, policy_chain, set_name

ACCEPT_MARK = "0x10000"
PASS_MARK = "0x20000"
FORWARD = "cali-FORWARD"
OUTPUT = "cali-OUTPUT"  # ipvs mode only: IPVS forwards in the input path and sends out through OUTPUT
FROM_DISPATCH, TO_DISPATCH = "cali-from-wl-dispatch", "cali-to-wl-dispatch"
PREFIXES = ("cali-",)  # every chain this renderer writes starts with it (and only those)
SET_PREFIXES = ("cali40s:", "cali40n:")


def _comment(text: str) -> str:
    return '-m comment --comment "' + text.replace('"', "'")[:250] + '"'


def _match(m: Match, direction: str, sets: dict[str, AddressSet]) -> str:
    """Felix's match order: protocol, the peer's set, ports, named ports, then the negations."""
    peer_dir = "dst" if direction == EGRESS else "src"
    parts = []
    if m.protocol:
        parts.append(f"-p {m.protocol}")
    if m.peer:
        parts.append(f"-m set --match-set {set_name(sets[m.peer])} {peer_dir}")
    if m.ports:
        lo, hi = m.ports
        parts.append(f"-m multiport --dports {lo}" if lo == hi else f"-m multiport --dports {lo}:{hi}")
    if m.named:
        parts.append(f"-m set --match-set {set_name(sets[m.named])} dst,dst")
    if m.peer_not:
        parts.append(f"-m set ! --match-set {set_name(sets[m.peer_not])} {peer_dir}")
    return " ".join(parts)


def render_sets(policy: NodePolicy) -> dict[str, tuple[str, tuple[str, ...]]]:
    """ipset name -> (type, members). hash:net takes no /0: it holds the two halves instead."""
    def members(s: AddressSet) -> tuple[str, ...]:
        return tuple(x for m in s.members for x in (("0.0.0.0/1", "128.0.0.0/1") if m == "0.0.0.0/0" else (m,)))
    return {set_name(s): ("hash:net" if s.kind == "net" else "hash:ip,port", members(s)) for s in policy.sets}


def render(policy: NodePolicy, ipvs: bool = False) -> tuple[list[str], list[str]]:
    """(chain names, rule lines) of the filter table; no lines when no pod is isolated.

    ``ipvs``: kube-proxy's ipvs mode DNATs a Service's packets in the input path (IPVS hooks
    LOCAL_IN) and sends them on through OUTPUT, never FORWARD. ``cali-OUTPUT`` gives those
    packets (``-m ipvs --ipvs --vdir ORIGINAL``: the client's direction of an IPVS
    connection) the same dispatch, so the source pod's egress and a local destination pod's
    ingress are enforced on the pod behind the Service, as Calico does in ipvs mode. The node's
    own connections through a Service to its own pods (source address local) skip the
    ingress dispatch, so a node reaches its own pods in every proxy mode, as in iptables and
    nftables mode, where that path never meets FORWARD."""
    if policy.empty:
        return [], []
    sets = {s.name: s for s in policy.sets}
    chains = [FORWARD, FROM_DISPATCH, TO_DISPATCH] + ([OUTPUT] if ipvs else [])
    if ipvs:
        ipvs_match = "-m ipvs --ipvs --vdir ORIGINAL"
        outs = [f"-A {OUTPUT} {ipvs_match} -j MARK --set-xmark 0x0/0xe0000",
                f"-A {OUTPUT} {ipvs_match} -j {FROM_DISPATCH}",
                f"-A {OUTPUT} {ipvs_match} -m addrtype ! --src-type LOCAL -j {TO_DISPATCH}",
                f"-A {OUTPUT} -m mark --mark {ACCEPT_MARK}/{ACCEPT_MARK} {_comment('Policy explicitly accepted packet.')} -j ACCEPT"]
    else:
        outs = []
    lines = outs + [
        f"-A {FORWARD} -j MARK --set-xmark 0x0/0xe0000",
        f"-A {FORWARD} -j {FROM_DISPATCH}",
        f"-A {FORWARD} -j {TO_DISPATCH}",
        f"-A {FORWARD} -m mark --mark {ACCEPT_MARK}/{ACCEPT_MARK} {_comment('Policy explicitly accepted packet.')} -j ACCEPT",
    ]
    for direction, dispatch, flag in ((EGRESS, FROM_DISPATCH, "-s"), (INGRESS, TO_DISPATCH, "-d")):
        for ep in policy.endpoints:
            ids = ep.egress if direction == EGRESS else ep.ingress
            if ids is not None:
                lines.append(f"-A {dispatch} {flag} {ep.ip}/32 {_comment(ep.pod)} -g {endpoint_chain(ep.iface, direction)}")
    by_id = {c.id: c for c in policy.chains}
    for ep in policy.endpoints:
        for direction, ids in ((INGRESS, ep.ingress), (EGRESS, ep.egress)):
            if ids is None:
                continue
            name = endpoint_chain(ep.iface, direction)
            chains.append(name)
            lines += [
                f"-A {name} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                f"-A {name} -m conntrack --ctstate INVALID -j DROP",
                f"-A {name} -j MARK --set-xmark 0x0/{ACCEPT_MARK}",
                f"-A {name} {_comment('Start of policies')} -j MARK --set-xmark 0x0/{PASS_MARK}",
            ]
            for cid in ids:
                lines += [
                    f"-A {name} -m mark --mark 0x0/{PASS_MARK} -j {policy_chain(by_id[cid])}",
                    f"-A {name} -m mark --mark {ACCEPT_MARK}/{ACCEPT_MARK} {_comment('Return if policy accepted')} -j RETURN",
                ]
            lines.append(f"-A {name} -m mark --mark 0x0/{PASS_MARK} {_comment('Drop if no policies passed packet')} -j DROP")
    for chain in policy.chains:
        name = policy_chain(chain)
        chains.append(name)
        head = _comment(f"Policy {chain.id[2:]} {chain.direction.lower()}")  # on the chain's first rule, as Felix does
        for i, m in enumerate(chain.matches):
            match = _match(m, chain.direction, sets)
            lines.append(" ".join(x for x in (f"-A {name}", head if i == 0 else "", match) if x)
                         + f" -j MARK --set-xmark {ACCEPT_MARK}/{ACCEPT_MARK}")
            lines.append(f"-A {name} -m mark --mark {ACCEPT_MARK}/{ACCEPT_MARK} -j RETURN")
        if not chain.matches:  # a direction with no rules: one rule carrying the comment only
            lines.append(f"-A {name} {head}")
    return chains, lines
