"""Reading a file a user names (a scenario, an included manifest, ``invoke apply FILE``),
with the limits a file that may come from anyone needs, and nothing else: the command line
reads a manifest with this before handing its text to the lab's API server, without loading
a YAML parser it does not need.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from netns_lab.errors import ScenarioError

MAX_BYTES = 4 * 1024 * 1024  # a scenario and every file its objects: include, together


@dataclass
class Budget:
    """What one scenario has spent of :data:`MAX_BYTES`, :data:`MAX_NODES` and
    :data:`MAX_ALIAS_NODES`: shared by the scenario file and every file it includes, so a glob
    over many files cannot multiply them."""

    bytes: int = 0
    nodes: int = 0
    alias_nodes: int = 0


class FileRefused(ScenarioError):
    """A file that is not read at all (missing, not a regular file, too large, not UTF-8):
    ``reason`` lets the scenario report an included file at its own ``objects[i]``."""

    def __init__(self, file: str, reason: str, line: int | None = None) -> None:
        super().__init__(file, "", reason, line)
        self.reason = reason


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_text(file: str, budget: Budget) -> str:
    """The text of ``file`` if it is a regular file within the budget, else :class:`FileRefused`.

    ``stat`` comes before ``open`` because opening a device can act (a tape rewinds, a
    watchdog arms) and opening a FIFO blocks until a writer comes; ``O_NONBLOCK`` and the
    ``fstat`` of what was opened cover a file swapped in between. At most the size ``stat``
    gave plus one byte is read (more means the file is changing under us): pseudo-files of
    ``/proc`` and ``/sys`` say 0 bytes and some reads never end or consume what they read
    (``/proc/kmsg`` takes messages from the kernel log), so a 0-byte file is not read at all.
    """
    left = MAX_BYTES - budget.bytes
    try:
        st = os.stat(file)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(file, f"is {_kind(st.st_mode)}, not a regular file: only regular files are read")
        if st.st_size > left:
            raise FileRefused(file, too_long(st.st_size, budget), 1)
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise FileRefused(file, "no such file") from None
    except OSError as exc:
        raise FileRefused(file, f"cannot read file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(file, "is not a regular file: only regular files are read")
        chunks: list[bytes] = []
        size = 0
        while st.st_size and size <= st.st_size:
            chunk = os.read(fd, min(1 << 20, st.st_size + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise FileRefused(file, f"cannot read file: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > st.st_size:
        raise FileRefused(file, "cannot read file: it grew while being read (is something writing it?)")
    if size > left:
        raise FileRefused(file, too_long(size, budget), 1)
    budget.bytes += size
    return _decode(file, b"".join(chunks))


def too_long(size: int, budget: Budget) -> str:
    if budget.bytes:
        return (f"Too long: the file is {size} bytes; with the {budget.bytes} bytes read before it, that exceeds "
                f"the limit of {MAX_BYTES} bytes for a scenario and the files it includes")
    return f"Too long: the file is {size} bytes, the limit is {MAX_BYTES} bytes for a scenario and the files it includes"


def _decode(file: str, data: bytes) -> str:
    """UTF-8, with or without a byte-order mark; UTF-16 with one (what Windows editors and
    PowerShell's ``>`` write), as kubectl reads it. Anything else names the first bad byte's line."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        codec = "utf-16"
    else:
        codec = "utf-8-sig"
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1 if codec != "utf-16" else None
        bad = data[exc.start : exc.start + 1].hex()
        raise FileRefused(file, f"not valid YAML: not {codec.upper().replace('-SIG', '')} text (byte 0x{bad})", line) from None
