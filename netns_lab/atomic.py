"""Replace a file whole: readers (the DNS server, netexec, nginx, the cloud LB, tests) see the
old content or the new one, never half a file."""

from __future__ import annotations

import os


def write(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to a temporary file next to ``path`` and rename it over ``path``.

    The temporary name is hidden (a leading dot): ``ip netns exec`` bind-mounts every visible
    file of ``/etc/netns/NAME`` over ``/etc``, and one may run while resolv.conf is rewritten."""
    head, tail = os.path.split(path)
    tmp = os.path.join(head, f".{tail}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
