"""Cluster DNS and service discovery, through the pod's own resolver and real DNS clients."""

from __future__ import annotations

import os
import signal
import time

import pytest

from netns_lab import procs
from netns_lab.lab import Lab
from netns_lab.probes.resolve import resolve
from tests.conftest import ROOT

pytestmark = pytest.mark.root
DNS = os.path.join(ROOT, "scenarios", "dns.yaml")
HEADLESS = os.path.join(ROOT, "scenarios", "headless.yaml")
EXTNAME = os.path.join(ROOT, "scenarios", "externalname.yaml")
ZONE = "cluster.local"


@pytest.fixture
def dns_lab(lab_factory) -> Lab:  # type: ignore[no-untyped-def]
    return lab_factory(DNS)


@pytest.fixture
def headless_lab(lab_factory) -> Lab:  # type: ignore[no-untyped-def]
    return lab_factory(HEADLESS)


@pytest.mark.parametrize("name", [
    "my-service", "my-service.my-namespace", "my-service.my-namespace.svc", "my-service.my-namespace.svc.cluster.local",
])
def test_every_form_of_the_name_reaches_the_backends_with_the_pods_own_resolver(dns_lab: Lab, name: str) -> None:
    # getent runs under `ip netns exec`: the pod's resolv.conf, search path and ndots:5, libc's resolver
    out = dns_lab.exec("pod/my-namespace/client", ["getent", "ahostsv4", name], check=True).stdout
    ip = out.split()[0]
    assert ip == dns_lab.ip_of("service/my-namespace/my-service")
    served = {dns_lab.connect("pod/my-namespace/client", ip, 80).served_by for _ in range(30)}  # random per connection: 12 all on one of two backends happens 1 run in 2,048
    assert served == {"web-1", "web-2"}


def test_pod_resolv_conf_is_kubelets(dns_lab: Lab) -> None:
    text = dns_lab.exec("pod/my-namespace/client", ["cat", "/etc/resolv.conf"], check=True).stdout
    lines = [l for l in text.splitlines() if not l.startswith("#")]
    assert lines == [
        f"search my-namespace.svc.{ZONE} svc.{ZONE} {ZONE}",
        "nameserver 10.96.0.10",
        "options ndots:5",
    ]


RECORDS = [
    ("my-service.my-namespace.svc.cluster.local", "A", ["10.96.0.2"]),
    ("_http._tcp.my-service.my-namespace.svc.cluster.local", "SRV", ["0 100 80 my-service.my-namespace.svc.cluster.local."]),
    ("2.0.96.10.in-addr.arpa.", "PTR", ["my-service.my-namespace.svc.cluster.local."]),
    ("dns-version.cluster.local", "TXT", ['"1.1.0"']),
    ("10-244-0-2.my-namespace.pod.cluster.local", "A", ["10.244.0.2"]),
    ("my-service.my-namespace.svc.cluster.local", "AAAA", []),
    ("MY-SERVICE.My-Namespace.SVC.cluster.LOCAL", "A", ["10.96.0.2"]),  # names are case-insensitive
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("name,rtype,expected", RECORDS, ids=[f"{r[1]}-{r[0][:24]}" for r in RECORDS])
def test_records_over_udp_and_tcp(dns_lab: Lab, name: str, rtype: str, expected: list[str], tcp: bool) -> None:
    res = resolve(dns_lab.netns_of("pod/my-namespace/client"), name, rtype, tcp=tcp)
    assert res.result == "ok", res
    assert sorted(res.answers) == sorted(expected)


@pytest.mark.parametrize("name,result", [
    ("not-a-service", "nxdomain"),
    ("my-service.other-namespace.svc.cluster.local.", "nxdomain"),
    ("_nope._tcp.my-service.my-namespace.svc.cluster.local.", "nxdomain"),
    ("example.com.", "refused"),
])
def test_names_that_do_not_exist(dns_lab: Lab, name: str, result: str) -> None:
    for tcp in (False, True):
        res = resolve(dns_lab.netns_of("pod/my-namespace/client"), name, "A", tcp=tcp, timeout=1.0)
        assert res.result == result, res


def test_headless_a_set_is_exactly_the_ready_endpoints() -> None:
    with Lab.from_file(HEADLESS, {"name": "hl-ready"}) as lab:
        ns = lab.netns_of("pod/client")
        both = sorted([lab.ip_of("pod/db-0"), lab.ip_of("pod/db-1")])
        assert sorted(resolve(ns, "db", "A").answers) == both
        lab.set_ready("db-1", False)
        assert resolve(ns, "db", "A").answers == (lab.ip_of("pod/db-0"),)
        assert resolve(ns, "db-1.db", "A").result == "nxdomain"
        lab.set_ready("db-0", False)
        assert resolve(ns, "db", "A").result == "nxdomain"  # no ready endpoint
        lab.set_ready("db-0", True)
        lab.set_ready("db-1", True)
        assert sorted(resolve(ns, "db", "A", tcp=True).answers) == both


def test_headless_per_pod_names_srv_and_ptr(headless_lab: Lab) -> None:
    ns = headless_lab.netns_of("pod/client")
    assert resolve(ns, "db-0.db", "A").answers == (headless_lab.ip_of("pod/db-0"),)
    srv = sorted(resolve(ns, "_pg._tcp.db", "SRV", tcp=True).answers)
    assert srv == ["0 50 5432 db-0.db.default.svc.cluster.local.", "0 50 5432 db-1.db.default.svc.cluster.local."]
    ip = headless_lab.ip_of("pod/db-1")
    rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa."
    assert resolve(ns, rev, "PTR").answers == ("db-1.db.default.svc.cluster.local.",)
    # a headless Service has no VIP: nothing in the proxy rules
    assert all(p.name != "db" for p in headless_lab.service_ports())


def test_externalname_cname_follows_a_change() -> None:
    with Lab.from_file(EXTNAME, {"name": "ext-change"}) as lab:
        ns = lab.netns_of("pod/client")
        assert resolve(ns, "my-database", "CNAME").answers == ("db.example.com.",)
        lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-database"},
                   "spec": {"type": "ExternalName", "externalName": "db2.example.org"}})
        t0 = time.monotonic()
        for tcp in (False, True):
            assert resolve(ns, "my-database", "CNAME", tcp=tcp).answers == ("db2.example.org.",)
        assert time.monotonic() - t0 < 1.0
        assert all(p.name != "my-database" for p in lab.service_ports())  # no VIP, no rules


def test_environment_equals_kubelets_for_a_multi_port_service(dns_lab: Lab) -> None:
    env = dict(l.split("=", 1) for l in dns_lab.exec("pod/my-namespace/client", ["env"], check=True).stdout.splitlines() if "=" in l)
    mine = {k: v for k, v in env.items() if k.startswith("MY_SERVICE_")}
    ip = dns_lab.ip_of("service/my-namespace/my-service")
    assert mine == {
        "MY_SERVICE_SERVICE_HOST": ip,
        "MY_SERVICE_SERVICE_PORT": "80",
        "MY_SERVICE_SERVICE_PORT_HTTP": "80",
        "MY_SERVICE_SERVICE_PORT_DNS_LIKE": "5353",
        "MY_SERVICE_PORT": f"tcp://{ip}:80",
        "MY_SERVICE_PORT_80_TCP": f"tcp://{ip}:80",
        "MY_SERVICE_PORT_80_TCP_PROTO": "tcp",
        "MY_SERVICE_PORT_80_TCP_PORT": "80",
        "MY_SERVICE_PORT_80_TCP_ADDR": ip,
        "MY_SERVICE_PORT_5353_UDP": f"udp://{ip}:5353",
        "MY_SERVICE_PORT_5353_UDP_PROTO": "udp",
        "MY_SERVICE_PORT_5353_UDP_PORT": "5353",
        "MY_SERVICE_PORT_5353_UDP_ADDR": ip,
    }
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"
    assert not any(k.startswith("LATER_") for k in env), "a Service created after the pod has no variables"
    web = dict(l.split("=", 1) for l in dns_lab.exec("pod/my-namespace/web-1", ["env"], check=True).stdout.splitlines() if "=" in l)
    assert not any(k.startswith("MY_SERVICE_") for k in web), "web-1 started before my-service existed"


def _dns_server_children(lab: Lab) -> list[int]:
    assert lab.state is not None
    sup = next(p["pid"] for p in lab.state.processes if p["role"] == "dns")
    kids = []
    for pid in procs.find_owned(lab.state.instance):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except FileNotFoundError:
            continue
        if ppid == sup:
            kids.append(pid)
    return kids


def test_dns_pod_killed_and_restarted_is_survived() -> None:
    with Lab.from_file(DNS, {"name": "dns-kill"}) as lab:
        ns = lab.netns_of("pod/my-namespace/client")
        assert resolve(ns, "my-service", "A").result == "ok"
        (victim,) = _dns_server_children(lab)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        back_at = None
        while time.monotonic() < deadline:
            kids = [k for k in _dns_server_children(lab) if k != victim]
            if kids:
                back_at = time.monotonic()
                break
            time.sleep(0.02)
        assert back_at is not None, "the DNS server was not restarted"
        while time.monotonic() - back_at < 2.0:
            if resolve(ns, "my-service", "A", timeout=0.3).result == "ok":
                break
        else:
            pytest.fail("queries did not work again within 2 s of the DNS server being back")


def test_invoke_exec_runs_in_the_pod_with_its_resolver_and_env(dns_lab: Lab) -> None:
    import subprocess
    import sys

    invoke = os.path.join(os.path.dirname(sys.executable), "invoke")
    out = subprocess.run(
        [invoke, "exec", dns_lab.name, "pod/my-namespace/client", "--", "sh", "-c", "getent hosts my-service; echo $MY_SERVICE_SERVICE_PORT"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[0] == dns_lab.ip_of("service/my-namespace/my-service") and lines[1] == "80"
    failing = subprocess.run([invoke, "exec", dns_lab.name, "pod/my-namespace/client", "--", "false"], cwd=ROOT, timeout=60)
    assert failing.returncode == 1
