"""ipvs mode's desired state (pure): virtual/real servers, kube-ipvs0 addresses, ipsets, glue."""

from __future__ import annotations

from netns_lab.proxy import ipvs
from tests.unit.test_proxy_render import CTX, PORTS, WEB


def test_virtual_and_real_servers() -> None:
    plan = ipvs.render(CTX, PORTS, "lc")
    vs = plan.services[("10.96.0.2", 80, "TCP")]
    assert vs.scheduler == "lc" and vs.persistence is None
    assert set(vs.reals) == {(e.ip, e.port) for e in WEB}
    assert plan.services[("10.96.0.3", 80, "TCP")].persistence == 600  # ClientIP affinity
    assert plan.services[("10.96.0.4", 80, "TCP")].reals == ()  # no endpoints: IPVS answers port unreachable
    # NodePorts are virtual servers on the node's IP; Local policy keeps only local endpoints
    assert set(plan.services[("10.0.0.2", 30080, "TCP")].reals) == {(e.ip, e.port) for e in WEB}
    # np-local has no endpoint on node-1: kube-proxy falls back to the Cluster endpoints
    # (kubernetes#97081: pods on the node still reach it; outside clients' replies are lost)
    assert set(plan.services[("10.0.0.2", 30081, "TCP")].reals) == {(e.ip, e.port) for e in WEB[1:]}
    # internalTrafficPolicy Local: only node-1's endpoint behind the ClusterIP
    assert plan.services[("10.96.0.7", 80, "TCP")].reals == (("10.244.0.2", 9376),)
    vips = {p.cluster_ip for p in PORTS} | {ip for p in PORTS for ip in (*p.external_ips, *p.lb_ips)}
    assert plan.vips == vips
    # externalIPs and LB IPs are virtual servers on the Service port, with the external policy
    assert set(plan.services[("198.51.100.1", 80, "TCP")].reals) == {(e.ip, e.port) for e in WEB}
    assert set(plan.services[("192.0.2.10", 80, "TCP")].reals) == {(e.ip, e.port) for e in WEB}
    assert set(plan.services[("198.51.100.2", 80, "TCP")].reals) == {(e.ip, e.port) for e in WEB[1:]}  # the same fallback


def test_ipsets() -> None:
    sets = ipvs.render(CTX, PORTS).sets
    assert "10.96.0.2,tcp:80" in sets["KUBE-CLUSTER-IP"] and "10.96.0.2,udp:53" in sets["KUBE-CLUSTER-IP"]
    assert "10.244.0.2,tcp:9376,10.244.0.2" in sets["KUBE-LOOP-BACK"]
    assert not any(e.startswith("10.244.1.") for e in sets["KUBE-LOOP-BACK"])  # node-1's endpoints only
    assert sets["KUBE-NODE-PORT-TCP"] == {"30080", "30081", "30082", "30083", "30084"}
    assert sets["KUBE-NODE-PORT-LOCAL-TCP"] == {"30081", "30083"}
    assert sets["KUBE-IPVS-IPS"] == {p.cluster_ip for p in PORTS} | {"192.0.2.10", "198.51.100.1", "198.51.100.2", "198.51.100.3"}
    assert sets["KUBE-EXTERNAL-IP"] == {"192.0.2.10,tcp:80"}
    assert sets["KUBE-LOAD-BALANCER"] == {"198.51.100.1,tcp:80", "198.51.100.2,tcp:80", "198.51.100.3,tcp:80"}
    assert sets["KUBE-LOAD-BALANCER-LOCAL"] == sets["KUBE-LOAD-BALANCER-FW"] == {"198.51.100.2,tcp:80"}
    assert sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"] == {"198.51.100.2,tcp:80,203.0.113.0/28"}


def test_glue_is_fixed_size_and_the_legacy_flag_drops_the_filter() -> None:
    small = ipvs.iptables_glue(CTX, ipvs.render(CTX, PORTS))
    big = ipvs.iptables_glue(CTX, ipvs.render(CTX, PORTS * 1))
    assert len(small.splitlines()) == len(big.splitlines())
    assert "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT" in small
    assert "KUBE-IPVS-IPS dst -j REJECT" not in ipvs.iptables_glue(CTX, legacy_ping=True)
    empty = ipvs.iptables_glue(CTX)  # kube-proxy writes a set's rule only when the set has entries
    assert "KUBE-CLUSTER-IP" not in empty.replace("--match-set KUBE-CLUSTER-IP dst,dst -j RETURN", "")
    assert "-A PREROUTING" not in small and "-A PREROUTING" in ipvs.iptables_glue(CTX, jumps=True)
