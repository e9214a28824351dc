"""A lab spread over several machines (the multi-VM Vagrant option), with the machines played
by network namespaces joined by a switch: each machine's half of the lab is built by its own
`netns_lab.cli` process running in that machine's namespace (``nsenter --net``, which keeps
the mount namespace, so the lab's namespaces are visible to everyone as on a real VM), and the
node network crosses the machines' network through the trunk VXLAN, exactly as between VMs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from netns_lab import cleanup, state
from netns_lab.lab import Lab
from netns_lab.probes.capture import Capture
from netns_lab.probes.mtu import probe_mtu
from netns_lab.realize import netns as nsmod

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBNET = "192.168.56"


class Machines:
    """``n`` namespaces standing in for VMs on one host-only network (a bridge in a switch
    namespace), each with ``eth1`` = ``192.168.56.1N/24``. Created and removed by name, the
    names being this test process's own."""

    def __init__(self, n: int) -> None:
        tag = f"nlt{os.getpid()}"
        self.switch = f"{tag}-sw"
        self.names = [f"{tag}-m{i + 1}" for i in range(n)]
        self.ips = [f"{SUBNET}.{11 + i}" for i in range(n)]
        self.created: list[str] = []
        self._ip(["netns", "add", self.switch])
        self.created.append(self.switch)
        self._ipv4_only(self.switch)
        self._ip(["-n", self.switch, "link", "add", "br0", "type", "bridge"])
        self._ip(["-n", self.switch, "link", "set", "br0", "up"])
        for i, (name, ip) in enumerate(zip(self.names, self.ips)):
            self._ip(["netns", "add", name])
            self.created.append(name)
            self._ipv4_only(name)
            self._ip(["-n", self.switch, "link", "add", f"port{i}", "master", "br0", "up", "type", "veth", "peer", "name", "eth1", "netns", name])
            self._ip(["-n", name, "addr", "add", f"{ip}/24", "dev", "eth1"])
            self._ip(["-n", name, "link", "set", "eth1", "up"])
            self._ip(["-n", name, "link", "set", "lo", "up"])

    @staticmethod
    def _ipv4_only(name: str) -> None:
        """No IPv6 link-local addresses: their DAD would change the snapshot by itself."""
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)

    @staticmethod
    def _ip(args: list[str]) -> str:
        return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout

    @property
    def spread(self) -> str:
        return ",".join(self.ips)

    def cli(self, i: int, args: list[str]) -> subprocess.Popen[str]:
        """``python -m netns_lab.cli ARGS`` on machine ``i`` (its network namespace only)."""
        return subprocess.Popen(["nsenter", f"--net={nsmod.path(self.names[i])}", sys.executable, "-m", "netns_lab.cli", *args],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def snapshot(self, i: int) -> str:
        """The machine's own network state: what a spread lab must never change."""
        n = self.names[i]
        return "\n".join(self._ip(["-n", n, *cmd]) for cmd in (["-d", "link", "show"], ["addr", "show"], ["route", "show", "table", "all"], ["rule", "show"]))

    def udp_ports(self, i: int) -> set[int]:
        out = subprocess.run(["ip", "netns", "exec", self.names[i], "ss", "-Hunl"], capture_output=True, text=True, check=True).stdout
        return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}

    def remove(self) -> None:
        for name in reversed(self.created):
            nsmod.delete(name)


@pytest.fixture
def machines() -> Iterator[Callable[[int], Machines]]:
    made: list[Machines] = []

    def make(n: int) -> Machines:
        m = Machines(n)
        made.append(m)
        return m

    yield make
    for m in made:
        m.remove()


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 240) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=timeout)
        out.append((p.returncode, text))
    return out


def _labs_down(*names: str) -> None:
    for name in names:
        assert state.load(name) is None, f"lab {name} left a record"
        assert not [n for n in os.listdir(nsmod.NETNS_RUN_DIR) if n.startswith(f"{name}_")], f"lab {name} left namespaces"


@pytest.mark.parametrize("scenario,n", [("spread", 2), ("clusterip", 2), ("loadbalancer", 3), ("dns", 2)])
def test_run_scenario_spread_over_machines(machines, scenario: str, n: int, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same command on every machine: each builds its nodes, waits for the others, runs the
    checks whose source it holds, waits for the others' checks, tears down; all pass together."""
    m = machines(n)
    before = [m.snapshot(i) for i in range(n)]
    names = [f"sp{os.getpid()}{chr(97 + i)}" for i in range(n)]
    reports = [tmp_path / f"{i}.json" for i in range(n)]
    procs = [m.cli(i, ["run-scenario", scenario, "--spread", m.spread, "--set", f"name={names[i]}", "--json", str(reports[i])])
             for i in range(n)]
    results = _finish(procs)
    for rc, text in results:
        assert rc == 0, text
    data = [json.loads(r.read_text()) for r in reports]
    total = sum(d["passed"] for d in data)
    with open(os.path.join(ROOT, "scenarios", f"{scenario}.yaml")) as fh:
        import yaml

        checks = yaml.safe_load(fh)["checks"]
    # every check ran once, on the machine of its source; a matrix on every machine (from its own pods)
    expected = len(checks) + (n - 1) * sum("matrix" in c for c in checks)
    assert total == expected and not any(d["failed"] for d in data)
    assert all(d["machine"] == f"host-{i + 1}" for i, d in enumerate(data))
    assert "router, external clients and cloud LB" not in results[1][1]
    _labs_down(*names)
    assert [m.snapshot(i) for i in range(n)] == before  # the machines' own namespaces: unchanged
    # the trunk sockets close with the labs (the kernel frees a deleted namespace asynchronously)
    deadline = time.monotonic() + 20
    while any(4789 in m.udp_ports(i) for i in range(n)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(4789 in m.udp_ports(i) for i in range(n))


@pytest.fixture
def spread_lab(machines) -> Iterator[tuple[Machines, Lab, Lab]]:  # type: ignore[no-untyped-def]
    m = machines(2)
    names = [f"sp{os.getpid()}a", f"sp{os.getpid()}b"]
    try:
        for i, name in enumerate(names):
            rc, text = _finish([m.cli(i, ["up", "clusterip", "--spread", m.spread, "--set", f"name={name}"])])[0]
            assert rc == 0, text
        yield m, Lab.attach(names[0]), Lab.attach(names[1])
    finally:
        for name in names:
            cleanup.remove_lab(name)


def test_pod_to_service_crosses_the_machines_in_two_vxlan_layers(spread_lab) -> None:  # type: ignore[no-untyped-def]
    from scapy.layers.inet import IP, UDP
    from scapy.layers.vxlan import VXLAN

    m, a, b = spread_lab
    web1, client2 = a.topology.pod("web-1"), b.topology.pod("client-2")
    node1, node2 = a.topology.node("node-1"), b.topology.node("node-2")
    assert (node1.host, node2.host, a.topology.host, b.topology.host) == (0, 1, 0, 1)
    assert 4789 in m.udp_ports(0) and 4789 in m.udp_ports(1)  # the trunk's socket is the machine's
    with Capture(m.names[1], "eth1", bpf="udp port 4789") as cap:
        r = b.connect("pod/client-2", "service/web-1-only", 80)  # its only endpoint is on the other machine
    assert r.result == "ok" and r.served_by == "web-1", r
    assert r.client_ip == str(client2.ip)  # no NAT between pods, across machines too
    request = next(p for p in cap.packets() if p.haslayer(VXLAN) and p[IP].src == f"{SUBNET}.12")
    assert (request[IP].dst, request[UDP].dport, request[VXLAN].vni) == (f"{SUBNET}.11", 4789, 2)  # the trunk
    node_packet = request[VXLAN].payload[IP]
    assert (node_packet.src, node_packet.dst, node_packet[UDP].dport) == (str(node2.ip), str(node1.ip), 8472)  # flannel
    flannel = request.getlayer(VXLAN, 2)
    assert flannel.vni == 1
    pod_packet = flannel.payload[IP]
    assert (pod_packet.src, pod_packet.dst) == (str(client2.ip), str(web1.ip))  # DNATed on node-2, before the tunnels


def test_full_size_packet_crosses_machines_and_one_more_byte_is_refused(spread_lab) -> None:  # type: ignore[no-untyped-def]
    from scapy.layers.inet import IP

    m, a, b = spread_lab
    topo = a.topology
    assert (topo.underlay_mtu, topo.pod_mtu) == (1450, 1400)  # the machines' 1500 minus the trunk, minus flannel
    src, dst = topo.pod("client-1"), b.topology.pod("web-2")
    with Capture(m.names[0], "eth1", bpf="udp port 4789") as cap:
        full = probe_mtu(src.netns, str(dst.ip), dst.ports[0][0], topo.pod_mtu)
    assert full.result == "ok" and full.detail.startswith("web-2"), full
    assert max(p[IP].len for p in cap.packets()) == 1500  # exactly fills the machines' link
    assert all(p[IP].flags.MF == 0 and p[IP].frag == 0 for p in cap.packets())
    over = probe_mtu(src.netns, str(dst.ip), dst.ports[0][0], topo.pod_mtu + 1)
    assert over.result == "refused", over


def test_spread_lab_cluster_dns_and_node_agents(spread_lab) -> None:  # type: ignore[no-untyped-def]
    from netns_lab.probes.peers import phase_of

    m, a, b = spread_lab
    # the DNS pod lives on the first machine; a pod on the second resolves through it
    out = b.exec("pod/client-2", ["getent", "hosts", "my-service"], timeout=10)
    assert out.returncode == 0 and out.stdout.split()[0] == b.service("my-service").cluster_ip, out
    assert phase_of(a, a.topology.hosts[1]) == "up" and phase_of(b, b.topology.hosts[0]) == "up"
    b.mark_checked()
    assert phase_of(a, a.topology.hosts[1]) == "checked"


def test_spread_lab_refuses_run_time_changes(spread_lab) -> None:  # type: ignore[no-untyped-def]
    from netns_lab import cli

    m, a, _b = spread_lab
    err = subprocess.run([sys.executable, "-m", "netns_lab.cli", "delete", a.name, "pod/web-1"], cwd=ROOT, capture_output=True, text=True)
    assert err.returncode == cli.EXIT_BUILD
    assert "spread over 2 machines" in err.stderr and len(err.stderr.strip().splitlines()) == 1
    assert a.connect("pod/client-1", "pod/web-1", 9376).result == "ok"  # nothing was changed


@pytest.mark.parametrize("spread,n,rule", [
    (f"{SUBNET}.21,{SUBNET}.22", 2, "exactly one of the machines must be this one"),
    (f"{SUBNET}.11,{SUBNET}.12,{SUBNET}.13", 3, "3 machines for 2 nodes"),
    (f"{SUBNET}.11,vm-2", 2, "expected comma-separated IPv4 addresses"),
    (f"{SUBNET}.11,{SUBNET}.11", 2, "Duplicate value"),
    (f"{SUBNET}.11", 2, "at least two machines"),
])
def test_bad_spread_is_refused_before_anything_is_built(machines, spread: str, n: int, rule: str) -> None:  # type: ignore[no-untyped-def]
    m = machines(n)
    before = set(os.listdir(nsmod.NETNS_RUN_DIR))
    rc, text = _finish([m.cli(0, ["up", "clusterip", "--spread", spread, "--set", f"name=sp{os.getpid()}x"])])[0]
    assert rc == 2, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --spread: ") and rule in lines[0], text
    assert set(os.listdir(nsmod.NETNS_RUN_DIR)) == before and state.load(f"sp{os.getpid()}x") is None


FAKE_VAGRANT = '''#!{python}
"""`vagrant ssh labN -c CMD` for the namespace machines: CMD runs in labN's network namespace.
The machines share this host's /run/netns, so each gets its own lab name (real VMs need not)."""
import os, sys
_ssh, machine, _c, cmd = sys.argv[1:5]
prefix = "cd /vagrant && sudo invoke "
assert (_ssh, _c) == ("ssh", "-c") and cmd.startswith(prefix), sys.argv
cmd = "cd {root} && {invoke} " + cmd[len(prefix):] + f" --set name=sp{{os.getppid()}}{{machine}}"
os.execvp("nsenter", ["nsenter", "--net=/run/netns/" + os.environ["FAKE_VAGRANT_" + machine.upper()], "sh", "-c", cmd])
'''


def test_labs_spread_sh_runs_the_scenario_on_every_vm_at_once(machines, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """labs/spread.sh with `vagrant ssh` standing for a shell on each namespace machine."""
    m = machines(3)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vagrant"
    fake.write_text(FAKE_VAGRANT.format(python=sys.executable, root=ROOT, invoke=os.path.join(os.path.dirname(sys.executable), "invoke")))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "NETNS_LAB_VMS": "3",
           **{f"FAKE_VAGRANT_LAB{i + 1}": name for i, name in enumerate(m.names)}}
    run = subprocess.run([os.path.join(ROOT, "labs", "spread.sh"), "loadbalancer", "--set", "cluster.proxyMode=nftables"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    for i in range(3):
        assert f"== lab{i + 1} (exit 0)" in run.stdout and f"host-{i + 1} (192.168.56.{11 + i}) of 3 machines" in run.stdout
    passed = [line for line in run.stdout.splitlines() if "checks passed (all passed)" in line]
    assert len(passed) == 3
    bad = subprocess.run([os.path.join(ROOT, "labs", "spread.sh"), "no-such-scenario"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and bad.stdout.count("(exit 2)") == 3, bad.stdout


def test_a_machine_alone_gives_up_after_the_peer_timeout_and_cleans_up(machines) -> None:  # type: ignore[no-untyped-def]
    import signal

    m = machines(2)
    name = f"sp{os.getpid()}z"
    rc, text = _finish([m.cli(0, ["run-scenario", "clusterip", "--spread", m.spread, "--set", f"name={name}", "--peer-timeout", "3"])])[0]
    assert rc == 3, text
    assert f"error: spread lab {name}: host-2 (192.168.56.12) not up or checked after 3s" in text
    assert "waiting for host-2 (192.168.56.12) to be up or checked: it says nothing yet" in text
    _labs_down(name)
    # killed while it waits: SIGTERM tears the lab down like Ctrl-C
    proc = m.cli(0, ["run-scenario", "clusterip", "--spread", m.spread, "--set", f"name={name}"])
    assert proc.stdout is not None
    assert "waiting for host-2" in proc.stdout.readline()
    assert state.load(name) is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.1)
    _labs_down(name)


def test_status_names_this_machines_share(spread_lab) -> None:  # type: ignore[no-untyped-def]
    import io

    from netns_lab import cli

    _m, a, b = spread_lab
    out = io.StringIO()
    cli.status(out)
    text = out.getvalue()
    assert f"  spread: this machine is host-1 (192.168.56.11) of 2: nodes node-1, {len(a.topology.local_pods)} pods; the router" in text
    assert f"  spread: this machine is host-2 (192.168.56.12) of 2: nodes node-2, {len(b.topology.local_pods)} pods; node network MTU 1450" in text


def _vm_ready() -> str:
    """Why two VMs cannot boot here, or "" (CI installs the kernel, qemu and virtme-ng)."""
    import glob
    import shutil

    if not glob.glob("/boot/vmlinuz-*"):
        return "no kernel in /boot (labs/provision.sh --vm installs linux-image-amd64)"
    if shutil.which("qemu-system-x86_64") is None or not os.path.exists(os.path.join(os.path.dirname(sys.executable), "vng")):
        return "qemu or virtme-ng missing (labs/provision.sh --vm installs them)"
    return ""


@pytest.mark.skipif(bool(_vm_ready()), reason=_vm_ready() or "-")
def test_two_real_vms_joined_by_a_virtual_cable() -> None:
    """`invoke spread-vms`: two VMs on Debian's stock kernel, each with its own /run/netns and
    the same lab name, a virtio NIC each on one qemu cable; the trunk crosses it for real."""
    invoke = os.path.join(os.path.dirname(sys.executable), "invoke")
    run = subprocess.run([invoke, "spread-vms", "spread"], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    for i in (1, 2):
        assert f"[vm{i}] netns-lab VM: kernel " in out and f"[vm{i}] machine 192.168.56.1{i} on " in out
    assert "[vm1]   host-1 (192.168.56.11) of 2 machines: nodes node-1; 3 of 6 checks" in out
    assert "[vm2]   host-2 (192.168.56.12) of 2 machines: nodes node-2; 4 of 6 checks" in out
    assert "[vm1] 3/3 checks passed (all passed)" in out and "[vm2] 4/4 checks passed (all passed)" in out
    # every answer came from a pod on the other VM: each crossed the cable, through the trunk
    assert "[vm1]   PASS  node-1's client to the Service whose only pod is on node-2, no NAT: ok=1; served by web-2" in out
    assert "[vm2]   PASS  node-2's client to the Service whose only pod is on node-1, no NAT: ok=1; served by web-1" in out
    assert "[vm2]   PASS  pod-to-pod matrix: 3/3 pairs connected, source IP preserved in 3/3" in out


def test_graph_of_a_running_spread_lab_places_each_node(spread_lab) -> None:  # type: ignore[no-untyped-def]
    from netns_lab.graph import dot

    _m, a, _b = spread_lab
    text = dot(a.topology, a.pods, a.services)
    assert "spread over 2 machines" in text
    assert "node-1  eth0 10.0.0.2" in text and "on host-1 (192.168.56.11)" in text and "on host-2 (192.168.56.12)" in text
