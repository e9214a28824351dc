"""Run tests or a scenario as root inside a VM booted from the distribution's stock kernel.

Some kernels (WSL, containers, minimal cloud kernels, this project's CI machine) lack IP_VS
and dummy interfaces. virtme-ng boots the installed ``linux-image-amd64`` kernel under qemu
with this machine's filesystem shared, so the same checkout and virtualenv run inside it.
KVM is not assumed (``--disable-kvm``: software emulation, ~30 s to boot).
"""

from __future__ import annotations

import glob
import os
import shlex
import subprocess
import sys

MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_sh", "dummy", "br_netfilter", "vxlan", "nf_conntrack")


def stock_kernel() -> str:
    kernels = sorted(glob.glob("/boot/vmlinuz-*"), key=os.path.getmtime)
    if not kernels:
        raise SystemExit("no kernel in /boot: apt-get install linux-image-amd64 (labs/provision.sh --vm does it)")
    return kernels[-1]


def run(inner: list[str], memory: str = "2G", cpus: int = 2, timeout: float = 3600) -> int:
    """Boot the VM, load the lab's modules, report the kernel, run ``inner`` from the repo root."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bindir = os.path.dirname(sys.executable)
    script = (
        "set -e; "
        + " ".join(f"modprobe {m};" for m in MODULES)
        + ' echo "netns-lab VM: kernel $(uname -r), IP_VS $(test -e /proc/net/ip_vs && echo loaded)"; '
        + f"cd {shlex.quote(repo)}; export PATH={shlex.quote(bindir)}:$PATH NETNS_LAB_IN_VM=1; "
        + "exec " + " ".join(shlex.quote(a) for a in inner)
    )
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}")
    results = os.path.join(repo, "benchmarks", "results")  # the only place the VM writes to
    cmd = [os.path.join(bindir, "vng"), "--run", stock_kernel(), "--disable-kvm", "--memory", memory,
           "--cpus", str(cpus), "--user", "root", "--rwdir", results, "--exec", script]
    # Relay the console through a pipe: qemu handed a file as stdout would rewrite it from the
    # start, wiping what ran before (the host half of `invoke test`) from a CI log.
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
    return proc.wait(timeout=timeout)
