"""The nftables netlink writer makes exactly the table ``nft -f`` makes.

Every kube-proxy fixture (tests/kubeproxy/nftables, 15 states) is applied to one scratch
namespace by ``nft -f`` and to another as the nftables proxier writes it (its fixed objects
by ``nft -f``, the Service ports' chains in batches and the maps last, over netlink); the two
tables must list the same, expression for expression. Then partial syncs: a series of
changes through the writer must end where a fresh ``nft -f`` of the final state ends. A
statement outside the compiler's vocabulary sends the whole transaction to ``nft -f``; a
batch the kernel refuses applies nothing and names the statement.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network

import pytest

from netns_lab.controllers.endpoints import Endpoint
from netns_lab.errors import RealizeError
from netns_lab.proxy import nftables as nft
from netns_lab.proxy.types import NodeContext, ServicePortInfo
from netns_lab.realize import nftmsg, nftnl, proxier
from netns_lab.realize.proxier import NftablesProxier
from tests import nftref
from tests.kubeproxy import fixtures

pytestmark = pytest.mark.root


def _through_writer(ctx: NodeContext, steps: list[tuple[ServicePortInfo, ...]], batch: int | None = None,
                    ) -> tuple[tuple[str, list[str]], list[str]]:
    """Sync ``steps`` in order (the first full, the rest partial) through the proxier in a
    scratch namespace: (its listing, the writer used per sync)."""
    with nftref.scratch() as ns:
        p = NftablesProxier(ns, ctx)
        writers = []
        old = proxier.FULL_SYNC_BATCH
        proxier.FULL_SYNC_BATCH = batch or old
        try:
            for i, ports in enumerate(steps):
                p.sync(ports, full=i == 0)
                writers.append(p.writer)
        finally:
            proxier.FULL_SYNC_BATCH = old
        return nftref.listing(ns, nft.table_name(ctx)), writers


@pytest.mark.parametrize("name", fixtures.names("nftables"))
def test_every_kube_proxy_fixture_reaches_the_kernel_as_nft_would_make_it(name: str) -> None:
    fx = fixtures.load("nftables", name)
    want = nftref.by_nft(nft.table_name(fx.ctx), nft.full_text(fx.ctx, fx.ports))
    # batches of 2 Service ports: the maps are switched only after every batch of chains
    got, writers = _through_writer(fx.ctx, [fx.ports], batch=2)
    assert writers == ["netlink"]
    assert got[0] == want[0]
    assert got[1] == want[1]


CTX = NodeContext("node-1", IPv4Network("10.244.0.0/16"), IPv4Network("10.96.0.0/12"), ("192.168.0.2",))


def _port(i: int, eps: int = 3, **kw) -> ServicePortInfo:  # type: ignore[no-untyped-def]
    endpoints = tuple(Endpoint(f"ns/p{i}-{j}", f"10.244.{1 + j % 2}.{10 + (i * 4 + j) % 240}", 8080, f"node-{1 + j % 2}") for j in range(eps))
    base = ServicePortInfo("ns", f"svc-{i}", "http", "TCP", f"10.96.0.{10 + i}", 80, None, None, False, False, endpoints)
    return replace(base, **kw)


def test_partial_syncs_end_where_nft_would_put_the_table() -> None:
    """Endpoints removed and added, a Service added and deleted, one left without endpoints,
    a NodePort, an LB IP behind one source range, session affinity, a Local policy: every
    change one netlink batch, and the end state as ``nft -f`` of it makes it."""
    a, b, c = _port(0), _port(1, node_port=30080), _port(2, affinity_timeout=600)
    lb = _port(3, lb_ips=("192.0.2.7",), source_ranges=("203.0.113.0/24",), node_port=30081, external_local=True)
    udp = _port(6, protocol="UDP", port=53, port_name="dns", external_ips=("192.0.2.9",))
    steps = [
        (a, b, c, lb),
        (replace(a, endpoints=a.endpoints[:2]), b, c, lb),
        (replace(a, endpoints=a.endpoints[:2]), b, c, lb, _port(4), udp),
        (replace(a, endpoints=()), b, replace(c, endpoints=c.endpoints[1:]), lb, _port(4), replace(udp, endpoints=udp.endpoints[:1])),
        (replace(a, endpoints=a.endpoints), c, lb, replace(udp, endpoints=udp.endpoints[:1])),
    ]
    got, writers = _through_writer(CTX, steps)
    assert writers == ["netlink"] * len(steps)
    with pytest.MonkeyPatch.context() as mp:  # the same history through `nft -f`
        mp.setenv(proxier.NFT_WRITER_ENV, "nft")
        want, by = _through_writer(CTX, steps)
    assert by == ["nft"] * len(steps)
    assert got[0] == want[0]
    assert got[1] == want[1]
    # and, but for the order sets were made in, the table a fresh `nft -f` of the end state makes
    fresh = nftref.by_nft(nft.table_name(CTX), nft.full_text(CTX, steps[-1]))
    assert got[1] == fresh[1] and sorted(got[0].splitlines()) == sorted(fresh[0].splitlines())


CTX6 = NodeContext("node-1", IPv6Network("fd00:10:244::/56"), IPv6Network("fd00:10:96::/112"), ("fd00:192:168::2",), family=6)


def test_an_ip6_table_is_written_the_same_way() -> None:
    eps = (Endpoint("ns/a", "fd00:10:244:1::5", 8080, "node-1"), Endpoint("ns/b", "fd00:10:244:2::6", 8080, "node-2"))
    ports = (ServicePortInfo("ns", "web", None, "TCP", "fd00:10:96::10", 80, 30080, 600, False, False, eps),
             ServicePortInfo("ns", "lb", "dns", "UDP", "fd00:10:96::11", 53, None, None, True, False, eps,
                             lb_ips=("2001:db8::7",), source_ranges=("2001:db8:5::/52",)))
    got, writers = _through_writer(CTX6, [ports[:1], ports])
    assert writers == ["netlink", "netlink"]
    want = nftref.by_nft(nft.table_name(CTX6), nft.full_text(CTX6, ports))
    assert got == want
    assert "ip6 saddr != 2001:db8:5::/52 drop" in got[0] and "meta l4proto udp dnat to [fd00:10:244:1::5]:8080" in got[0]


def test_several_source_ranges_become_the_interval_set_nft_makes() -> None:
    """A firewall of several loadBalancerSourceRanges (overlapping, adjacent, one holding the
    node's IP, so the LB IPs join them) is an anonymous interval set: written over netlink, in
    a full sync and in partial ones, IPv4 and IPv6, as ``nft -f`` makes it."""
    two = _port(5, lb_ips=("192.0.2.8",), source_ranges=("203.0.113.0/24", "198.51.100.0/24"))
    merged = _port(6, lb_ips=("192.0.2.9", "192.0.2.10"), source_ranges=("10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "192.168.0.0/24"))
    steps = [(_port(0), two), (_port(0), two, merged), (_port(0), replace(merged, source_ranges=("128.0.0.0/1", "1.2.3.4")))]
    got, writers = _through_writer(CTX, steps)
    assert writers == ["netlink"] * len(steps)
    want = nftref.by_nft(nft.table_name(CTX), nft.full_text(CTX, steps[-1]))
    assert got[1] == want[1] and sorted(got[0].splitlines()) == sorted(want[0].splitlines())
    got, writers = _through_writer(CTX, [steps[1]], batch=1)
    assert writers == ["netlink"] and got == nftref.by_nft(nft.table_name(CTX), nft.full_text(CTX, steps[1]))
    assert "ip saddr != { 10.0.0.0/8, 192.0.2.9-192.0.2.10, 192.168.0.0/24 } drop" in got[0]  # merged, LB IPs added
    eps = (Endpoint("ns/a", "fd00:10:244:1::5", 8080, "node-1"),)
    six = ServicePortInfo("ns", "lb", None, "TCP", "fd00:10:96::12", 80, None, None, False, False, eps,
                          lb_ips=("2001:db8::8",), source_ranges=("2001:db8:5::/52", "2001:db8:6::1", "fd00:192:168::/64"))
    got, writers = _through_writer(CTX6, [(six,)])
    assert writers == ["netlink"] and got == nftref.by_nft(nft.table_name(CTX6), nft.full_text(CTX6, (six,)))


def test_a_statement_the_compiler_does_not_know_goes_to_nft_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction holding a statement the compiler refuses (here: it is made to refuse the
    firewall rule of one Service) goes to ``nft -f`` as it is, and the table is still right;
    in a full sync, only that Service's batch."""
    compile_transaction = nftmsg.compile_transaction

    def refusing(table: str, text: str) -> list[nftmsg.Message]:
        if "203.0.113.0/24" in text:
            raise nftmsg.Unsupported("203.0.113.0/24")
        return compile_transaction(table, text)

    monkeypatch.setattr(nftmsg, "compile_transaction", refusing)
    two = _port(5, lb_ips=("192.0.2.8",), source_ranges=("203.0.113.0/24", "198.51.100.0/24"))
    got, writers = _through_writer(CTX, [(_port(0),), (_port(0), two)])
    assert writers == ["netlink", "nft"]
    assert got == nftref.by_nft(nft.table_name(CTX), nft.full_text(CTX, (_port(0), two)))
    got, writers = _through_writer(CTX, [(_port(0), two, _port(1))], batch=1)
    assert writers == ["both"]
    assert got == nftref.by_nft(nft.table_name(CTX), nft.full_text(CTX, (_port(0), two, _port(1))))


def test_a_refused_batch_applies_nothing_and_names_the_statement() -> None:
    with nftref.scratch() as ns:
        p = NftablesProxier(ns, CTX)
        p.sync((_port(0),), full=True)
        before = nftref.listing(ns, "ip kube-proxy")
        bad = nftmsg.compile_transaction("ip kube-proxy", "add chain ip kube-proxy extra\n"
                                         "add rule ip kube-proxy extra jump no-such-chain\n")
        with pytest.raises(RealizeError, match="add rule ip kube-proxy extra jump no-such-chain: ENOENT"):
            nftnl.send(ns, bad)
        assert nftref.listing(ns, "ip kube-proxy") == before  # not even the chain


def test_a_restarted_proxier_finds_and_removes_what_is_stale() -> None:
    """A new proxier (a restarted kube-proxy, or another process attaching to the lab) knows
    nothing of the table: its full sync reads the chains and sets there by a netlink dump and
    removes those its Services no longer make (here an affinity set and two Services' chains)."""
    before = (_port(0), _port(1, affinity_timeout=60), _port(2))
    after = (_port(0), _port(1))
    with nftref.scratch() as ns:
        NftablesProxier(ns, CTX).sync(before, full=True)
        fresh = NftablesProxier(ns, CTX)
        assert fresh._existing() == (_chains(before), {a for sp in before for a in nft.render_port(CTX, sp).affinity_sets})
        fresh.sync(after, full=True)
        got = nftref.listing(ns, "ip kube-proxy")
    want = nftref.by_nft("ip kube-proxy", nft.full_text(CTX, after))
    assert got[1] == want[1] and sorted(got[0].splitlines()) == sorted(want[0].splitlines())


def _chains(ports: tuple[ServicePortInfo, ...]) -> set[str]:
    return set(nft.fixed_chains(CTX)) | {c for sp in ports for c in nft.render_port(CTX, sp).chains}


def test_a_thousand_services_one_full_sync_in_batches() -> None:
    """Four batches of chains, the maps' elements split over several messages (a netlink
    attribute holds 64 KiB): the same table as one `nft -f`."""
    ports = tuple(_port(i % 200, eps=1 + i % 4, cluster_ip=f"10.96.{4 + i // 250}.{i % 250}", name=f"gen-{i}",
                        node_port=30000 + i if i % 3 == 0 else None) for i in range(1000))
    got, writers = _through_writer(CTX, [ports])
    assert writers == ["netlink"]
    assert got == nftref.by_nft("ip kube-proxy", nft.full_text(CTX, ports))


def test_a_service_of_a_thousand_endpoints() -> None:
    """Its ``numgen`` map's elements do not fit one netlink attribute: split, as nft splits them."""
    big = replace(_port(7), endpoints=tuple(Endpoint(f"ns/b{j}", f"10.244.{4 + j // 250}.{j % 250 + 1}", 8080, "node-1")
                                             for j in range(1000)))
    got, writers = _through_writer(CTX, [(big,)])
    assert writers == ["netlink"]
    assert got == nftref.by_nft("ip kube-proxy", nft.full_text(CTX, (big,)))


def test_a_changed_service_is_rewritten_with_the_maps_not_before() -> None:
    """A full sync's early batches only re-write unchanged Services and make new ones: a
    Service whose rules change (here Local traffic that lost its node's endpoints, which
    also changes its no-endpoint map elements) goes in the last transaction, with the maps,
    so no packet meets its new chains with the old maps."""
    local = _port(8, node_port=30088, external_local=True)
    lost = replace(local, endpoints=tuple(e for e in local.endpoints if e.node != "node-1"))
    ports = (_port(0), _port(1), local)
    sent: list[list[str]] = []
    real = nftnl.send

    def record(netns: str, messages: list[nftmsg.Message]) -> None:
        sent.append([m.what for m in messages])
        real(netns, messages)

    with nftref.scratch() as ns, pytest.MonkeyPatch.context() as mp:
        mp.setattr(proxier, "FULL_SYNC_BATCH", 1)
        p = NftablesProxier(ns, CTX)
        p.sync(ports, full=True)
        mp.setattr(nftnl, "send", record)
        p.sync((_port(0), _port(1), lost), full=True)
        got = nftref.listing(ns, "ip kube-proxy")
    ext = nft.external_chain(local)
    assert len(sent) == 3  # two unchanged Services, then the changed one with the maps
    assert not any(ext in w for batch in sent[:-1] for w in batch)
    assert any(ext in w for w in sent[-1]) and any("no-endpoint-nodeports" in w for w in sent[-1])
    assert got == nftref.by_nft("ip kube-proxy", nft.full_text(CTX, (_port(0), _port(1), lost)))


def test_a_sync_that_fails_half_way_makes_the_next_one_full() -> None:
    """Batches before the failure are committed, so the proxier's record no longer says what
    the kernel holds: the next sync is a full one, and it puts the table right."""
    ports = tuple(_port(i) for i in range(4))
    calls = []
    real = nftnl.send

    def fail_second(netns: str, messages: list[nftmsg.Message]) -> None:
        calls.append(len(messages))
        if len(calls) == 2:
            raise RealizeError("nf_tables batch", "apply", None, "injected")
        real(netns, messages)

    with nftref.scratch() as ns, pytest.MonkeyPatch.context() as mp:
        mp.setattr(proxier, "FULL_SYNC_BATCH", 1)
        p = NftablesProxier(ns, CTX)
        mp.setattr(nftnl, "send", fail_second)
        with pytest.raises(RealizeError, match="injected"):
            p.sync(ports, full=True)
        assert not p.plan.synced and not p.plan.fragments
        st = p.sync(ports[:3])
        assert st.full
        got = nftref.listing(ns, "ip kube-proxy")
    assert got == nftref.by_nft("ip kube-proxy", nft.full_text(CTX, ports[:3]))
