"""kube-proxy renderers (pure): golden files for a full sync and for a partial sync.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/unit/test_proxy_render.py``
and review the diff: these files are what kube-proxy's rules look like for the cases below.
"""

from __future__ import annotations

import os
from dataclasses import replace
from ipaddress import IPv4Network

import pytest

from netns_lab.controllers.endpoints import Endpoint
from netns_lab.proxy import iptables as ipt
from netns_lab.proxy import nftables as nft
from netns_lab.proxy.types import NodeContext, ServicePortInfo, endpoint_hash, port_proto_hash
from tests.conftest import ROOT

GOLDEN = os.path.join(ROOT, "tests", "golden")
CTX = NodeContext("node-1", IPv4Network("10.244.0.0/16"), IPv4Network("10.96.0.0/12"), ("10.0.0.2",))


def ep(pod: str, ip: str, node: str, port: int = 9376) -> Endpoint:
    return Endpoint(f"default/{pod}", ip, port, node)


WEB = (ep("web-1", "10.244.0.2", "node-1"), ep("web-2", "10.244.1.2", "node-2"), ep("web-3", "10.244.1.3", "node-2"))


def sp(name: str, ip: str, port: int, eps: tuple[Endpoint, ...], **kw: object) -> ServicePortInfo:
    base = dict(namespace="default", name=name, port_name=None, protocol="TCP", cluster_ip=ip, port=port, node_port=None,
                affinity_timeout=None, external_local=False, internal_local=False, endpoints=eps)
    base.update(kw)
    return ServicePortInfo(**base)  # type: ignore[arg-type]


PORTS = (
    sp("my-service", "10.96.0.2", 80, WEB, port_name="http"),
    sp("my-service", "10.96.0.2", 53, WEB, port_name="dns", protocol="UDP"),
    sp("sticky", "10.96.0.3", 80, WEB[:2], affinity_timeout=600),
    sp("empty", "10.96.0.4", 80, ()),
    sp("np-cluster", "10.96.0.5", 80, WEB, node_port=30080),
    sp("np-local", "10.96.0.6", 80, WEB[1:], node_port=30081, external_local=True),
    sp("itp-local", "10.96.0.7", 80, WEB, internal_local=True),
    sp("lb", "10.96.0.8", 80, WEB, node_port=30082, lb_ips=("198.51.100.1",), external_ips=("192.0.2.10",)),
    sp("lb-ranges", "10.96.0.9", 80, WEB[1:], node_port=30083, lb_ips=("198.51.100.2",), source_ranges=("203.0.113.0/28",),
       external_local=True),
    sp("lb-empty", "10.96.0.10", 80, (), node_port=30084, lb_ips=("198.51.100.3",)),
)


def check_golden(name: str, text: str) -> None:
    path = os.path.join(GOLDEN, name)
    if os.environ.get("UPDATE_GOLDEN"):
        with open(path, "w") as fh:
            fh.write(text)
    with open(path) as fh:
        assert text == fh.read(), f"{name} differs from the golden file (UPDATE_GOLDEN=1 to regenerate)"


def test_kube_proxy_chain_names() -> None:
    # Same hashing as kube-proxy: base32(sha256(servicePortName + protocol))[:16]
    assert port_proto_hash("default/my-service:http", "tcp") == port_proto_hash("default/my-service:http", "tcp")
    assert len(port_proto_hash("ns/svc:p", "tcp")) == 16 and port_proto_hash("ns/svc:p", "tcp").isupper()
    assert endpoint_hash("ns/svc:p", "tcp", "10.0.0.1:80") != endpoint_hash("ns/svc:p", "tcp", "10.0.0.2:80")
    assert ipt.svc_chain(PORTS[0]).startswith("KUBE-SVC-") and len(ipt.svc_chain(PORTS[0])) == 25


def test_iptables_full_sync_golden() -> None:
    check_golden("iptables-full.txt", ipt.full_text(CTX, PORTS))


def test_nftables_full_sync_golden() -> None:
    check_golden("nftables-full.nft", nft.full_text(CTX, PORTS))


def _one_endpoint_less() -> tuple[ServicePortInfo, ...]:
    return (replace(PORTS[0], endpoints=WEB[:2]), *PORTS[1:])


def test_iptables_partial_sync_rewrites_only_the_changed_service() -> None:
    sync = ipt.IptablesSync(CTX)
    sync.restore_input(PORTS)
    text = sync.restore_input(_one_endpoint_less())
    check_golden("iptables-partial.txt", text)
    gone = ipt.sep_chain(PORTS[0], "10.244.1.3", 9376)
    assert f"-X {gone}" in text
    assert f":{ipt.svc_chain(PORTS[0])} " in text
    for other in PORTS[1:]:  # untouched services' chains are not rewritten
        if other.endpoints:
            assert f":{ipt.svc_chain(other)} " not in text
    assert ":KUBE-SERVICES - [0:0]" in text  # the dispatch chains are rewritten, as kube-proxy does
    assert sync.restore_input(_one_endpoint_less()).count("-X ") == 0  # nothing changed: nothing deleted


def _shared_chains(sync: ipt.IptablesSync) -> dict[tuple[str, str], set[str]]:
    return {key: set(lines.values()) for key, lines in sync.shared.items() if lines}


def test_iptables_partial_syncs_by_delta_end_where_a_full_sync_starts() -> None:
    """A run of partial syncs told only what changed (ports gone, ports new) keeps the same
    chains and the same lines in the shared chains as one full sync of the result."""
    import random

    rng = random.Random(7)
    now = list(PORTS)
    sync = ipt.IptablesSync(CTX)
    sync.restore_input(tuple(now))
    for step in range(60):
        i = rng.randrange(len(now))
        gone = (now.pop(i),)
        new = (replace(gone[0], endpoints=tuple(rng.sample(WEB, rng.randrange(4))), port=1000 + step),) if step % 5 or len(now) < 3 else ()
        now.extend(new)
        before = set(sync.chains)
        text = sync.restore_input(tuple(now), delta=(gone, new))
        fresh = ipt.IptablesSync(CTX)
        fresh.restore_input(tuple(now))
        assert sync.chains == fresh.chains
        assert _shared_chains(sync) == _shared_chains(fresh)
        assert {line[3:] for line in text.splitlines() if line.startswith("-X ")} == {c for _, c in before - fresh.chains}


def test_nftables_partial_sync_changes_only_what_changed() -> None:
    sync = nft.NftSync(CTX)
    sync.transaction(PORTS)
    text = sync.transaction(_one_endpoint_less())
    check_golden("nftables-partial.nft", text)
    assert "add table" not in text and "add element" not in text and "delete element" not in text
    assert f"delete chain ip kube-proxy {nft.endpoint_chain(PORTS[0], '10.244.1.3', 9376)}" in text
    assert f"flush chain ip kube-proxy {nft.service_chain(PORTS[0])}" in text
    assert nft.service_chain(PORTS[2]) not in text  # other Services untouched
    assert sync.transaction(_one_endpoint_less()) == "\n"  # no change: empty transaction


def test_nftables_element_changes_are_diffs() -> None:
    sync = nft.NftSync(CTX)
    sync.transaction(PORTS)
    emptied = (replace(PORTS[0], endpoints=()), *PORTS[1:])
    text = sync.transaction(emptied)
    assert "delete element ip kube-proxy service-ips { 10.96.0.2 . tcp . 80 }" in text
    name = PORTS[0].port_name_string  # kube-proxy comments no-endpoint elements with the port's name
    assert f'add element ip kube-proxy no-endpoint-services {{ 10.96.0.2 . tcp . 80 comment "{name}" : goto reject-chain }}' in text
    assert "cluster-ips" not in text  # still one Service port on that VIP: the element stays


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_iptables_probabilities_give_equal_shares(n: int) -> None:
    eps = tuple(ep(f"p{i}", f"10.244.0.{i + 2}", "node-1") for i in range(n))
    rules = ipt.nat_chain_rules(CTX, (sp("s", "10.96.0.9", 80, eps),), ipt.svc_chain(sp("s", "10.96.0.9", 80, eps)))
    probs = [float(r.split("--probability ")[1].split()[0]) for r in rules if "--probability" in r]
    assert len(probs) == n - 1
    remaining, shares = 1.0, []
    for p in probs:
        shares.append(remaining * p)
        remaining *= 1 - p
    shares.append(remaining)
    assert all(abs(s - 1 / n) < 1e-9 for s in shares)
