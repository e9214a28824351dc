"""Kernel names for Kubernetes objects: deterministic, bounded, and readable while they fit.

Kubernetes accepts names the kernel cannot take as they are: a pod or node name is a DNS-1123
subdomain of up to 253 characters, a namespace name a label of up to 63, so the network
namespace of a pod, ``<lab>_<k8s-namespace>_<pod>``, can reach 40 + 1 + 63 + 1 + 253 = 358
characters. That name is a file under ``/run/netns`` and a directory under ``/etc/netns``
(the pod's resolv.conf), and a path component may not exceed ``NAME_MAX`` (255 bytes):
``OSError: File name too long``. iproute2 refuses such names too (``ip netns`` checks
``NAME_MAX``).

kube-proxy meets the same problem with chain names and solves it with ``hashAndTruncate``:
keep a readable part, add a short hash of the *full* name. :func:`netns` does the same for
namespace names: a name that fits :data:`NETNS_BUDGET` is used unchanged (every name the
shipped scenarios, labs and README show stays what it was); a longer one keeps the lab name
whole, the start of each of the other parts (the Kubernetes namespace and the pod, shared
fairly, so two pods of one long namespace still read differently), then ``~`` and 10 hex
digits of the SHA-256 of the whole untruncated name: at most :data:`NETNS_BUDGET` characters,
e.g. pod ``checkout-api-7d9f8b6c5d-x2x4z-with-a-much-longer-name`` in namespace
``payments-production`` of lab ``shop`` lives in
``shop_payments-production_checkout-api-7d9f8b6c5d-x2x4~f401104460``. Hence:

* deterministic: the same object always gets the same kernel name, on every machine of a
  spread lab and in every process, with no table to keep in sync;
* injective in practice: two names that share any prefix still differ in the hash of the
  whole name (40 bits: a chance of about 1 in 2 million of any collision among 1,000
  long-named pods; the plan refuses one if it ever happens, see ``topology.plan``);
* never equal to an unchanged name: ``~`` cannot occur in a Kubernetes name or a lab name,
  so a shortened name can only equal another shortened name;
* owned by its lab: the lab name (at most 40 characters) and its ``_`` are always kept
  whole, and the lab's state file records every namespace name it created, so ``down`` and
  ``clean`` delete by that record exactly as before.

Why 64 rather than the hard limit of 255: the name is printed by ``ip netns list``, in
``ip -all netns exec`` headers and in ``capture``'s ``netns/ifname`` line, and 64 keeps each
of those on one terminal line; it leaves room for anything derived from the name (a
``resolv.conf`` path, a suffix such as ``.pcap``) to stay far below ``NAME_MAX``; and with a
40-character lab name there are still 12 readable characters of the object's own name
before the hash. Interface names (15 bytes, ``IFNAMSIZ`` - 1) never come from a user's name:
pod veths are hashed (``topology._veth_name``) and every other interface has a fixed name or
an index (``uplinkN``, ``clientN``).
"""

from __future__ import annotations

import hashlib

NETNS_BUDGET = 64  # characters of a network namespace name (see the module docstring)
HASH_LEN = 10  # hex digits of SHA-256 appended to a shortened name
MARK = "~"  # separates the readable part from the hash; never part of a Kubernetes or lab name
LAB_NAME_MAX = 40  # the scenario loader's limit: the lab prefix must always survive shortening


def fit(name: str, budget: int = NETNS_BUDGET) -> str:
    """``name`` when it fits ``budget`` characters, else its readable start + ``~`` + hash.

    The hash is of the whole ``name``, so the result depends on every character of it, not
    only on the part that is kept. Trailing ``-``, ``.`` and ``_`` of the kept part are
    dropped so the readable part never ends mid-separator (``web-~…`` reads badly); that
    cannot make two names equal because the hash still covers the full name.
    """
    if len(name) <= budget:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:HASH_LEN]
    keep = budget - len(MARK) - HASH_LEN
    return name[:keep].rstrip("-._") + MARK + digest


def netns(lab: str, *parts: str) -> str:
    """The namespace name ``<lab>_<part>_<part>...``, shortened when longer than the budget.

    The lab prefix is kept whole so every name of a lab starts with ``<lab>_`` and no other
    lab's names can be produced (lab names contain no ``_``). The room left before the hash
    is shared among the parts max-min fairly: a short part (``default``) stays whole and
    the rest goes to the long ones, so the pod's own name stays visible even in a
    63-character namespace.
    """
    if len(lab) > LAB_NAME_MAX:
        raise ValueError(f"lab name {lab!r} is longer than {LAB_NAME_MAX} characters")
    full = "_".join((lab, *parts))
    if len(full) <= NETNS_BUDGET or not parts:
        return fit(full)
    room = NETNS_BUDGET - len(MARK) - HASH_LEN - len(lab) - len(parts)  # the "_" before each part
    kept = [part[:n].rstrip("-._") or part[:n] for part, n in zip(parts, _fair_shares([len(p) for p in parts], room))]
    digest = hashlib.sha256(full.encode()).hexdigest()[:HASH_LEN]
    return "_".join((lab, *kept)) + MARK + digest


def _fair_shares(lengths: list[int], room: int) -> list[int]:
    """Split ``room`` characters among parts of these lengths: the shortest first get all
    they need, the others an equal share of what is left (max-min fairness)."""
    shares = [0] * len(lengths)
    left = room
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for k, i in enumerate(order):
        shares[i] = min(lengths[i], max(1, left // (len(order) - k)))
        left -= shares[i]
    return shares


def is_shortened(name: str) -> bool:
    """Whether ``name`` was shortened by :func:`fit` or :func:`netns` (then show the object's real name too)."""
    return MARK in name


__all__ = ["NETNS_BUDGET", "HASH_LEN", "MARK", "fit", "netns", "is_shortened"]
