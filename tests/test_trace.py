"""``trace``: one real packet, pod -> ClusterIP -> pod on another node, followed by the
kernel's own nftables tracing (which also sees iptables-nft rules). The chain names it reports
are kube-proxy's for that Service and endpoint, and the endpoint chosen is the pod that answered."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from netns_lab.probes.trace import TABLE, trace
from netns_lab.proxy import iptables as ipt
from netns_lab.proxy import nftables as nft
from tests.conftest import ROOT

pytestmark = pytest.mark.root
CLUSTERIP = os.path.join(ROOT, "scenarios", "clusterip.yaml")


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_trace_names_the_chains_taken_the_dnat_and_the_vxlan_header(lab_factory, mode: str) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(CLUSTERIP, cluster__proxyMode=mode)
    sp = next(p for p in lab.service_ports() if p.name == "my-service" and p.protocol == "TCP")
    client = lab.topology.pod("client-1")
    for _ in range(20):  # the DNAT is random: retry until it picks a pod on the other node
        t = trace(lab, "pod/client-1", "my-service:80")
        assert t.result == "ok" and t.dnat is not None
        pod = lab.topology.pod(t.served_by)  # type: ignore[arg-type]
        assert t.dnat == f"{pod.ip}:9376"  # the endpoint chosen is the pod that answered
        if pod.node != client.node:
            break
    else:
        pytest.fail("20 traces never chose a remote endpoint")
    ep = next(e for e in sp.endpoints if e.ip == str(pod.ip))
    if mode == "iptables":
        assert t.service_chain == ipt.svc_chain(sp) and t.endpoint_chain == ipt.sep_chain(sp, ep.ip, ep.port)
    else:
        assert t.service_chain == nft.service_chain(sp) and t.endpoint_chain == nft.endpoint_chain(sp, ep.ip, ep.port)
    assert t.server_saw == f"{client.ip}:{t.source_addr.split(':')[1]}"  # no SNAT pod to pod
    src_node, dst_node = lab.topology.node(client.node), lab.topology.node(pod.node)
    assert t.vxlan == [{"outer_src": str(src_node.ip), "outer_dst": str(dst_node.ip), "udp_dport": 8472, "vni": 1,
                        "inner_src": t.source_addr, "inner_dst": t.dnat}]
    assert "dev flannel.1" in t.routes[src_node.name] and "dev cni0" in t.routes[dst_node.name]
    assert {s.node for s in t.steps} == {src_node.name, dst_node.name}
    assert f"dst={sp.cluster_ip}" in t.conntrack[src_node.name] and f"src={pod.ip}" in t.conntrack[src_node.name]
    for n in lab.topology.nodes:  # the trace table is gone again
        tables = subprocess.run(["ip", "netns", "exec", n.netns, "nft", "list", "tables"], capture_output=True, text=True).stdout
        assert TABLE not in tables


def test_trace_cli_json(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab = lab_factory(CLUSTERIP, cluster__proxyMode="nftables")
    proc = subprocess.run([sys.executable, "-m", "netns_lab", "trace", lab.name, "--from", "pod/client-2", "--to",
                           "my-service:53", "--protocol", "udp", "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["result"] == "ok" and doc["protocol"] == "udp"
    assert doc["dnat"] == f"{lab.ip_of('pod/' + doc['served_by'])}:9376"
    sp = next(p for p in lab.service_ports() if p.name == "my-service" and p.protocol == "UDP")
    assert doc["service_chain"] == nft.service_chain(sp)
