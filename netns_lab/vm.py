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

MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_sh", "dummy", "br_netfilter", "vxlan", "nf_conntrack",
           "xt_ipvs", "ip_set", "ip_set_hash_net", "ip_set_hash_ipport", "xt_set", "sctp")  # NetworkPolicy: ipvs, ipsets, SCTP


def stock_kernel() -> str:
    kernels = sorted(glob.glob("/boot/vmlinuz-*"), key=os.path.getmtime)
    if not kernels:
        raise SystemExit("no kernel in /boot: apt-get install linux-image-amd64 (labs/provision.sh --vm does it)")
    return kernels[-1]


def _start(inner: list[str], memory: str, cpus: int, setup: str = "", qemu_opts: str = "") -> subprocess.Popen[bytes]:
    """Boot a VM that loads the lab's modules, runs ``setup`` then ``inner`` from the repo root."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bindir = os.path.dirname(sys.executable)
    script = (
        "set -e; "
        + " ".join(f"modprobe {m};" for m in MODULES)
        + ' echo "netns-lab VM: kernel $(uname -r), IP_VS $(test -e /proc/net/ip_vs && echo loaded)"; '
        + setup
        + f"cd {shlex.quote(repo)}; export PATH={shlex.quote(bindir)}:$PATH NETNS_LAB_IN_VM=1; "
        + "exec " + " ".join(shlex.quote(a) for a in inner)
    )
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}")
    results = os.path.join(repo, "benchmarks", "results")  # the only place the VM writes to
    cmd = [os.path.join(bindir, "vng"), "--run", stock_kernel(), "--disable-kvm", "--memory", memory,
           "--cpus", str(cpus), "--user", "root", "--rwdir", results,
           *([f"--qemu-opts={qemu_opts}"] if qemu_opts else []), "--exec", script]
    # Relay the console through a pipe: qemu handed a file as stdout would rewrite it from the
    # start, wiping what ran before (the host half of `invoke test`) from a CI log.
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _relay(proc: subprocess.Popen[bytes], prefix: bytes = b"") -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.buffer.write(prefix + line)
        sys.stdout.flush()


def run(inner: list[str], memory: str = "2G", cpus: int = 2, timeout: float = 3600) -> int:
    """Boot the VM, load the lab's modules, report the kernel, run ``inner`` from the repo root."""
    proc = _start(inner, memory, cpus)
    _relay(proc)
    return proc.wait(timeout=timeout)


SPREAD_IPS = ("192.168.56.11", "192.168.56.12")  # the Vagrantfile's first two VMs


def run_spread(inner: list[str], memory: str = "1536M", timeout: float = 3600) -> int:
    """Two VMs joined by a virtual cable, each running ``inner`` with ``--spread`` (and the
    machines' addresses) appended: a lab spread over two real kernels, its trunk crossing a
    real (virtio) network between them, as with `NETNS_LAB_VMS=2 vagrant up` but with qemu alone.

    The cable is qemu's ``dgram`` network backend over two Unix sockets: frames go from one
    VM's NIC to the other's and touch no network of this machine. Inside, the VM's NIC gets
    its address (the VM's own namespace: a throwaway machine, as a Vagrant VM's network is
    configured by Vagrant). Returns the worst exit code; output lines carry ``[vm1]``/``[vm2]``.
    """
    import tempfile
    import threading

    with tempfile.TemporaryDirectory(prefix="netns-lab-cable-") as tmp:
        socks = [os.path.join(tmp, f"vm{i + 1}.sock") for i in range(2)]
        procs = []
        for i, ip in enumerate(SPREAD_IPS):
            cable = (f"-netdev dgram,id=lan,local.type=unix,local.path={socks[i]},remote.type=unix,remote.path={socks[1 - i]} "
                     f"-device virtio-net-pci,netdev=lan,mac=52:54:00:38:00:{11 + i}")
            setup = ("nic=$(basename $(dirname $(grep -l 52:54:00:38:00 /sys/class/net/*/address))); "
                     f"ip link set $nic up; ip addr add {ip}/24 dev $nic; echo \"machine {ip} on $nic\"; ")
            procs.append(_start([*inner, "--spread", ",".join(SPREAD_IPS)], memory, 1, setup, cable))
        relays = [threading.Thread(target=_relay, args=(p, f"[vm{i + 1}] ".encode()), daemon=True) for i, p in enumerate(procs)]
        for t in relays:
            t.start()
        codes = [p.wait(timeout=timeout) for p in procs]
        for t in relays:
            t.join(timeout=10)
    return max(codes, key=abs)
