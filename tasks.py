"""invoke tasks: the user's entry points (``invoke --list``). Each is a thin wrapper over
``netns_lab.cli`` so the same behaviour is reachable as ``python -m netns_lab``."""

from __future__ import annotations

import os
import shlex
import sys

from invoke import Exit, task

from netns_lab import cli

cli.install_signal_handlers()  # Ctrl-C and kill: report so far, tear down, exit 130 / 143

HERE = os.path.dirname(os.path.abspath(__file__))
VM_MARKERS = "ipvs or sctp"  # the tests this kernel cannot run: the stock-kernel VM runs them


def _exit(code: int) -> None:
    if code:
        raise Exit(code=code)


@task(help={"file": "scenario file, or a name from scenarios/", "keep": "leave the lab running", "set": "override KEY=VALUE (repeatable)",
            "junit": "also write a JUnit XML report to this file", "json": "also write a JSON report to this file",
            "spread": cli.SPREAD_HELP, "peer_timeout": "spread: seconds to wait for the other machines (default 600)"},
      iterable=["set"])
def run_scenario(c, file, keep=False, set=None, junit="", json="", spread="", peer_timeout=cli.PEER_TIMEOUT):  # noqa: A002
    """Build a scenario, run its checks, print a report, tear it down. Exit 0/1/2/3."""
    _exit(cli.run_scenario(file, keep, set or [], junit=junit, json_path=json, spread_over=spread, peer_timeout=float(peer_timeout)))


@task(help={"file": "scenario file, or a name from scenarios/", "set": "override KEY=VALUE", "spread": cli.SPREAD_HELP}, iterable=["set"])
def up(c, file, set=None, spread=""):  # noqa: A002
    """Build a lab and leave it running."""
    _exit(cli.up(file, set or [], spread_over=spread))


@task(help={"name": "lab name (the scenario's name)"})
def down(c, name):
    """Remove one lab and everything it owns."""
    _exit(cli.down(name))


@task(help={"check": "only list what is left; exit 1 if anything is"})
def clean(c, check=False):
    """Remove every lab's namespaces and processes, by their ownership records."""
    _exit(cli.clean(check))


@task(help={"lab": "lab name", "pod": "pod (NAME or NS/NAME)", "not_ready": "mark it not ready"})
def pod_ready(c, lab, pod, not_ready=False):
    """Mark a pod ready (or --not-ready); the Service rules follow within one sync."""
    _exit(cli.pod_ready(lab, pod, not not_ready))


@task(help={"lab": "lab name", "file": "YAML manifests (--- separated; several files: comma-separated)"})
def apply(c, lab, file):
    """Create or replace objects in a running lab (kubectl apply -f): one change, all or nothing."""
    _exit(cli.apply(lab, _words(file)))


@task(help={"lab": "lab name", "refs": "KIND/NS/NAME or KIND/NAME, comma-separated (more after --)",
            "grace_period": "seconds a deleted pod stays terminating and serving (default: its "
                            "terminationGracePeriodSeconds if set, else none; 0: at once)"})
def delete(c, lab, refs, grace_period=None):
    """Delete objects from a running lab (kubectl delete); a namespace takes what is in it."""
    _exit(cli.delete(lab, _words(refs) + _after_dashes(c), cli.grace_seconds(grace_period)))


@task(help={"lab": "lab name", "ref": "KIND/NS/NAME or KIND/NAME", "changes": "KEY=VALUE (set) or KEY- (remove), comma-separated"})
def label(c, lab, ref, changes):
    """Set or remove labels of an object of a running lab (kubectl label)."""
    _exit(cli.label(lab, ref, _words(changes) + _after_dashes(c)))


@task(help={"lab": "lab name"})
def reconcile(c, lab):
    """Bring a running lab back to its recorded objects (a full sync), e.g. after a killed change."""
    _exit(cli.reconcile(lab))


@task(help={"lab": "lab name", "follow": "keep printing new events until the lab goes (Ctrl-C to stop)"})
def events(c, lab, follow=False):
    """What each change did: which object, which controllers acted, what it cost."""
    _exit(cli.events(lab, follow))


def _words(text: str) -> list[str]:
    """``a,b``: several values in one argument (invoke takes one value per parameter; no
    Kubernetes name or label value contains a comma)."""
    return [w for w in text.split(",") if w]


def _after_dashes(c) -> list[str]:  # type: ignore[no-untyped-def]
    """The words after ``--``, as typed (invoke joins them with spaces, losing quoting)."""
    return sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else shlex.split(c.remainder or "")


@task(help={"lab": "lab name", "target": "pod/[NS/]NAME (or NAME), node/NAME, external"})
def exec(c, lab, target):  # noqa: A001 - the kubectl verb
    """Run a command in a pod or node: `invoke exec LAB pod/NAME -- CMD ARGS` (env + resolv.conf as kubelet's)."""
    # invoke joins the words after "--" with spaces, losing quoting: take them from argv as typed
    _exit(cli.exec_in(lab, target, _after_dashes(c)))


@task(help={"lab": "lab name", "target": "pod/[NS/]NAME (or NAME), node/NAME, external"})
def shell(c, lab, target):
    """An interactive shell in a pod or node of a running lab."""
    _exit(cli.exec_in(lab, target, [], interactive=True))


@task(help={"lab": "lab name", "kind": "pods | services | endpoints | ingress", "namespace": "namespace (default: default)",
            "all_namespaces": "every namespace (-A)", "output": "wide | json | yaml"})
def get(c, lab, kind, namespace="default", all_namespaces=False, output=""):
    """kubectl get for a running lab: same columns, read from the lab's live model."""
    _exit(cli.get(lab, kind, namespace, all_namespaces, output))


@task(help={"lab": "lab name", "where": "pod/NAME, node/NAME[:IFACE], underlay[:IFACE], external",
            "filter": "BPF filter (tcpdump syntax)", "count": "stop after N packets", "seconds": "stop after S seconds",
            "out": "pcap file to write (opens in Wireshark)"})
def capture(c, lab, where, filter="", count=20, seconds=10.0, out=""):  # noqa: A002
    """Capture on any lab interface into a pcap, with a short decoded summary (scapy)."""
    _exit(cli.capture(lab, where, filter, int(count), float(seconds), out))


@task(help={"hosts": "comma-separated host names for the certificate (SANs)", "out": "output directory",
            "name": "the Secret's name", "namespace": "the Secret's namespace"})
def gen_cert(c, hosts, out="certs", name="", namespace="default"):
    """Make a CA and a certificate for HOSTS, plus a kubernetes.io/tls Secret manifest to use in a scenario."""
    _exit(cli.gen_cert([h for h in hosts.replace(" ", ",").split(",") if h], out, name, namespace))


@task(help={"lab": "the lab (default: the only one up)", "from_": "pod/NAME, node/NAME or external[/NAME]",
            "to": "SERVICE:PORT, service/NS/NAME:PORT, pod/NAME:PORT, IP:PORT or [IPv6]:PORT", "protocol": "tcp or udp",
            "json": "machine-readable output", "family": "ipv4 or ipv6: which address of each object (dual-stack labs)"})
def trace(c, from_, to, lab="", protocol="tcp", json=False, family=""):  # noqa: A002
    """Send one real packet and print its way hop by hop: netfilter/nft rules it matched (nftrace),
    routing decisions, VXLAN encapsulation, conntrack's NAT, and what the server saw."""
    _exit(cli.trace(lab, from_, to, protocol, json, family=family))


@task(help={"lab": "a running lab with cluster.network or cluster.external.loadBalancer bgp", "json": "machine-readable"})
def bgp(c, lab, json=False):  # noqa: A002
    """BGP: each speaker's sessions (state, uptime, prefixes; as calicoctl node status) and the
    router's routes for pod subnets and load-balancer IPs."""
    _exit(cli.bgp(lab, json))


@task(help={"source": "scenario file, name in scenarios/, or a running lab's name",
            "out": "output file; .svg, .png, .mmd (Mermaid) or .dot (default: DOT on stdout)"})
def graph(c, source, out=""):
    """Draw the lab: nodes, pods, bridges, VXLAN, node network, external client, Services."""
    _exit(cli.graph(source, out))


@task
def status(c):
    """List labs, their phase and size."""
    _exit(cli.status())


@task(help={"quick": "smallest sizes only", "only": "comma list of: lab, matrix, services, dns, changes, ingress, netpol, dualstack, bgp"})
def bench(c, quick=False, only=""):
    """Benchmarks (figures, not pass/fail): pod network up/serve/down and matrix; Services
    (sync times, memory, connect latency per kube-proxy mode, table + plot in benchmarks/results);
    DNS; run-time changes (one new Service among N: rules synced, DNS answering, Python vs kernel);
    ingress controllers (endpoint changes without a reload, rule changes, requests/s)."""
    parts = set(filter(None, only.split(","))) or {"lab", "matrix", "services", "dns", "changes", "ingress", "netpol", "dualstack", "bgp"}
    quick_flag = " --quick" if quick else ""
    lab_parts = ",".join(sorted(parts & {"lab", "matrix"}))
    if lab_parts:
        c.run(f"{sys.executable} {os.path.join(HERE, 'benchmarks', 'bench_lab.py')}{quick_flag} --only {lab_parts}", pty=False)
    if "services" in parts:
        c.run(f"{sys.executable} {os.path.join(HERE, 'benchmarks', 'bench_services.py')}{quick_flag}", pty=False)
    if "dns" in parts:
        c.run(f"{sys.executable} {os.path.join(HERE, 'benchmarks', 'bench_dns.py')}", pty=False)
    if "changes" in parts:  # one Service applied to a lab of 100 / 1,000 / 10,000: rules synced, DNS answering
        c.run(f"{sys.executable} {os.path.join(HERE, 'benchmarks', 'bench_changes.py')}{quick_flag}", pty=False)
    if "ingress" in parts:  # nginx (Lua balancer) and HAProxy (runtime API): endpoint and rule changes, requests/s
        c.run(f"{sys.executable} {os.path.join(HERE, 'benchmarks', 'bench_ingress.py')}", pty=False)
    if "netpol" in parts:
        c.run(f"{sys.executable} {os.path.join(HERE, 'benchmarks', 'bench_netpol.py')}", pty=False)
    if "dualstack" in parts:  # IPv4 vs dual-stack labs up and serving; 1,000 single- vs dual-stack Services synced
        c.run(f"{sys.executable} {os.path.join(HERE, 'benchmarks', 'bench_dualstack.py')}{quick_flag}", pty=False)
    if "bgp" in parts:  # bgp vs vxlan/host-gw up and serving; convergence after up and after a node failure
        c.run(f"{sys.executable} {os.path.join(HERE, 'benchmarks', 'bench_bgp.py')}{quick_flag}", pty=False)


@task(help={"k": "pytest -k expression", "m": "pytest -m marker expression (default: ipvs or sctp)",
            "scenario": "run this scenario (run-scenario exit codes) instead of tests", "args": "more pytest arguments",
            "set": "with --scenario: override KEY=VALUE (repeatable), e.g. cluster.proxyMode=ipvs",
            "exec_": "run this shell command line instead (as root, from the repository, with the venv on PATH)"},
      iterable=["set"])
def test_vm(c, k="", m=VM_MARKERS, scenario="", args="", set=None, exec_=""):  # noqa: A002
    """Run tests (default: the IPVS ones), a scenario, or any command as root in a VM on Debian's stock kernel."""
    from netns_lab import vm

    if exec_:
        inner = ["bash", "-c", "set -e; " + exec_]
    elif scenario:
        inner = [sys.executable, "-m", "netns_lab", "run-scenario", scenario]
        for item in set or []:
            inner += ["--set", item]
    else:
        inner = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", m] + (["-k", k] if k else []) + shlex.split(args)
    _exit(vm.run(inner))


@task(help={"scenario": "scenario file, or a name from scenarios/", "set": "override KEY=VALUE (repeatable)"}, iterable=["set"])
def spread_vms(c, scenario, set=None):  # noqa: A002
    """Run a scenario spread over two VMs (Debian's stock kernel, qemu) joined by a virtual
    cable: the multi-VM Vagrant setup without Vagrant. Exit 0 when both VMs' checks pass."""
    from netns_lab import vm

    inner = [sys.executable, "-m", "netns_lab", "run-scenario", scenario]
    for item in set or []:
        inner += ["--set", item]
    _exit(vm.run_spread(inner))


@task(help={"k": "pytest -k expression", "vm": "also run the IPVS tests in the stock-kernel VM (default: yes)"})
def test(c, k="", vm=True):
    """The whole test suite, as root: pytest here, then the tests this kernel cannot run
    (IPVS, SCTP) inside a VM booted from Debian's stock kernel. Exit non-zero if either fails."""
    import subprocess

    from netns_lab import vm as vmod

    slowest = "--durations=25"  # CI's log names where its time goes (the suite's budget is 40 minutes)
    here = subprocess.call([sys.executable, "-m", "pytest", slowest, *(["-k", k] if k else [])], cwd=HERE)
    there = 0
    if vm:
        there = vmod.run([sys.executable, "-m", "pytest", slowest, "-p", "no:cacheprovider", "-m", VM_MARKERS, *(["-k", k] if k else [])])
    _exit(1 if (here not in (0, 5) or there not in (0, 5)) else 0)
