"""The start-up handshake between the lab and its in-lab servers (see ``Lab._spawn``).

A server prints one line on its stdout once it serves (``READY``; netexec adds how many
sockets it opened); the lab reads that line from a pipe and closes its end. The server then
points its stdout at /dev/null, so that nothing it prints later dies of a broken pipe.
"""

from __future__ import annotations

import os
import sys


def say_ready(line: str = "READY") -> None:
    """Tell the lab this server is serving, and let go of the pipe it listens on."""
    print(line, flush=True)
    sys.stdout.close()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
