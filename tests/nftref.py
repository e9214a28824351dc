"""The oracle for the nftables netlink writer: what ``nft -f`` makes of the same rules.

A scratch network namespace per call (named after this process, created and deleted here,
never a lab's), the renderer's full transaction applied with the nft command, and the table
listed two ways: ``nft list table`` (what a user reads) and ``nft --debug=netlink list table``
(every expression as the kernel holds it, register by register; its lines are compared as a
multiset because hash sets list their elements in a per-set random order, without rule
handles and anonymous set numbers, which record the order things were made in).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

_counter = itertools.count()


def run(netns: str, *cmd: str, data: str | None = None) -> str:
    proc = subprocess.run(["ip", "netns", "exec", netns, *cmd], input=data, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@contextmanager
def scratch() -> Iterator[str]:
    name = f"nftref-{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def listing(netns: str, table: str) -> tuple[str, list[str]]:
    """(``nft list table``, the sorted lines of ``nft --debug=netlink list table``)."""
    plain = run(netns, "nft", "list", "table", *table.split())
    raw = run(netns, "nft", "--debug=netlink", "list", "table", *table.split())
    return plain, sorted(_HANDLE.sub(r"\1", _ANON.sub(r"\1", line)) for line in raw.splitlines())


# what depends on the order objects were made in, not on what they are: a rule's handle and
# position (``ip kube-proxy CHAIN 68 67``) and the number the kernel gave an anonymous set (``__map3``)
_HANDLE = re.compile(r"^(ip6? \S+ \S+)(?: \d+)+$")
_ANON = re.compile(r"(__(?:map|set))\d+")


def by_nft(table: str, text: str) -> tuple[str, list[str]]:
    """The listing of ``text`` (a full transaction) applied by ``nft -f`` to an empty namespace."""
    with scratch() as ns:
        run(ns, "nft", "-f", "-", data=text)
        return listing(ns, table)
