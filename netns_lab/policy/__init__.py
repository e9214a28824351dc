"""NetworkPolicy renderers: one resolved model (:mod:`netns_lab.controllers.netpol`), two
dataplanes in Calico's layouts (``iptables`` + ipset, ``nftables``). Pure: text out, tested
against golden files; :mod:`netns_lab.realize.policy` applies it.

The names are Calico's (Felix v3.2x): a policy's chain is ``cali-pi-``/``cali-po-`` and its
policy ID ``NS/knp.default.NAME``, hashed when the name would exceed iptables' 28 characters
(``cali-pi-_`` + base64url(sha256(ID))); a set is ``cali40`` + its ID, cut at 31 characters.
"""

from __future__ import annotations

import hashlib

from netns_lab.controllers.netpol import EGRESS, AddressSet, PolicyChain, b64

MAX_CHAIN = 28  # iptables' chain names (XT_EXTENSION_MAXNAMELEN - 1, as Felix counts)
MAX_SET = 31  # ipset names


def limited_id(prefix: str, suffix: str, limit: int = MAX_CHAIN) -> str:
    """Felix's hashutils.GetLengthLimitedID."""
    if len(prefix) + len(suffix) > limit or (len(prefix) + len(suffix) == limit and suffix.startswith("_")):
        return prefix + "_" + b64(hashlib.sha256(suffix.encode()).digest())[: limit - 1 - len(prefix)]
    return prefix + suffix


def policy_chain(chain: PolicyChain) -> str:
    """``cali-pi-...`` (ingress) / ``cali-po-...`` (egress)."""
    return limited_id("cali-po-" if chain.direction == EGRESS else "cali-pi-", chain.id[2:])


def endpoint_chain(iface: str, direction: str) -> str:
    """``cali-tw-IFACE`` (to the workload: ingress) / ``cali-fw-IFACE`` (from it: egress)."""
    return ("cali-fw-" if direction == EGRESS else "cali-tw-") + iface


def set_name(s: AddressSet) -> str:
    return ("cali40" + s.name)[:MAX_SET]
