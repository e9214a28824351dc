"""NetworkPolicy, pure parts: selectors, the API server's defaulting, the policy model
(who is isolated, peers as sets, named ports per pod) and both renderers' golden files.

Regenerate the golden files after an intended change with
``UPDATE_GOLDEN=1 pytest tests/unit/test_netpol.py``.
"""

from __future__ import annotations

import os

import pytest

from netns_lab.controllers.netpol import EGRESS, INGRESS, plan
from netns_lab.controllers.topology import plan as topology
from netns_lab.model import LabelSelector
from netns_lab.policy import iptables as ipt
from netns_lab.policy import limited_id, nftables as nft, policy_chain
from netns_lab.scenario import load_scenario
from netns_lab.scenario.admission import Apply, admit
from netns_lab.scenario.yamlsrc import Source
from netns_lab.store import Objects
from tests.unit.test_proxy_render import check_golden
from tests.conftest import ROOT

MODEL = os.path.join(ROOT, "tests", "scenarios", "netpol.yaml")


def np(name: str, ns: str, **spec: object) -> dict[str, object]:
    spec.setdefault("podSelector", {})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def with_policies(*manifests: dict[str, object]):  # type: ignore[no-untyped-def]
    scenario = load_scenario(MODEL)
    objects = admit(Objects.of(scenario), [Apply(Source("test", None), f"p[{i}]", m) for i, m in enumerate(manifests)])
    return objects, plan(objects, topology(scenario))


@pytest.mark.parametrize(("selector", "labels", "want"), [
    (LabelSelector(), {}, True),
    (LabelSelector((("pod", "a"),)), {"pod": "a"}, True),
    (LabelSelector((("pod", "a"),)), {"pod": "b"}, False),
    (LabelSelector(match_expressions=(("pod", "In", ("a", "b")),)), {"pod": "b"}, True),
    (LabelSelector(match_expressions=(("pod", "In", ("a", "b")),)), {}, False),
    (LabelSelector(match_expressions=(("pod", "NotIn", ("a",)),)), {}, True),  # absent key: NotIn holds
    (LabelSelector(match_expressions=(("pod", "NotIn", ("a",)),)), {"pod": "a"}, False),
    (LabelSelector(match_expressions=(("pod", "Exists", ()),)), {"pod": ""}, True),
    (LabelSelector(match_expressions=(("pod", "DoesNotExist", ()),)), {"pod": "a"}, False),
    (LabelSelector((("ns", "x"),), (("pod", "Exists", ()),)), {"ns": "x"}, False),  # every requirement must hold
])
def test_label_selector(selector: LabelSelector, labels: dict[str, str], want: bool) -> None:
    assert selector.matches(tuple(sorted(labels.items()))) is want


def test_policy_types_default_as_the_api_server_does() -> None:
    objects, _ = with_policies(np("i", "x"), np("e", "x", egress=[{}]), np("explicit", "x", policyTypes=["Egress"], ingress=[{}]))
    types = {p.name: p.policy_types for p in objects.network_policies}
    assert types == {"i": ("Ingress",), "e": ("Ingress", "Egress"), "explicit": ("Egress",)}


def test_only_selected_pods_of_the_policy_namespace_are_isolated_per_direction() -> None:
    _, nodes = with_policies(np("a-in", "x", podSelector={"matchLabels": {"pod": "a"}}),
                             np("all-out", "y", policyTypes=["Egress"]))
    eps = {e.pod: e for n in nodes.values() for e in n.endpoints}
    assert set(eps) == {"x/a", "y/a", "y/b", "y/c"}
    assert eps["x/a"].ingress is not None and eps["x/a"].egress is None
    assert eps["y/b"].ingress is None and eps["y/b"].egress is not None
    assert all(e.ingress is None for e in eps.values() if e.pod.startswith("y/"))
    node_of = {p.key: p.node for p in topology(load_scenario(MODEL)).pods}
    for name, node in nodes.items():  # each node holds its own pods only
        assert all(node_of[e.pod] == name for e in node.endpoints)


def test_a_policy_without_rules_allows_nothing_and_an_empty_rule_everything() -> None:
    _, nodes = with_policies(np("deny", "x", podSelector={"matchLabels": {"pod": "a"}}),
                             np("all", "x", podSelector={"matchLabels": {"pod": "b"}}, ingress=[{}]))
    chains = {c.policy: c for n in nodes.values() for c in n.chains}
    assert chains["x/deny"].matches == ()
    assert len(chains["x/all"].matches) == 1 and chains["x/all"].matches[0].peer is None and chains["x/all"].matches[0].protocol is None


def test_peers_resolve_to_pod_addresses_and_selectors_combine() -> None:
    objects, nodes = with_policies(np("p", "x", ingress=[{"from": [
        {"podSelector": {"matchLabels": {"pod": "b"}}},                                            # x/b only
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}},                                       # every pod of y
        {"namespaceSelector": {"matchLabels": {"ns": "z"}}, "podSelector": {"matchLabels": {"pod": "c"}}},  # z/c (AND)
    ]}]))
    topo = {p.key: str(p.ip) for p in topology(load_scenario(MODEL)).pods}
    sets = {s.name: s for n in nodes.values() for s in n.sets}
    (chain,) = {c.policy: c for n in nodes.values() for c in n.chains}.values()
    members = [set(sets[m.peer].members) for m in chain.matches]
    assert members == [{f"{topo['x/b']}/32"}, {f"{topo[k]}/32" for k in ("y/a", "y/b", "y/c")}, {f"{topo['z/c']}/32"}]


def test_named_ports_resolve_per_pod_for_ingress_on_the_selected_pods_for_egress_on_any() -> None:
    scenario = load_scenario(MODEL)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "d", "namespace": "x", "labels": {"pod": "a"}},
           "spec": {"containers": [{"name": "c", "image": "netexec", "ports": [{"name": "serve-80-tcp", "containerPort": 8080}]}]}}
    objects = admit(Objects.of(scenario), [Apply(Source("t", None), "p", pod)] + [
        Apply(Source("t", None), "q", np("in", "x", podSelector={"matchLabels": {"pod": "a"}}, ingress=[{"ports": [{"port": "serve-80-tcp"}]}])),
        Apply(Source("t", None), "r", np("out", "y", policyTypes=["Egress"], egress=[{"ports": [{"port": "serve-80-tcp"}]}]))])
    from netns_lab.controllers.topology import replan

    topo = replan(topology(scenario), Objects.of(scenario), objects)
    nodes = plan(objects, topo)
    ip = {p.key: str(p.ip) for p in topo.pods}
    sets = {s.name: s for n in nodes.values() for s in n.sets}
    chains = {c.policy: c for n in nodes.values() for c in n.chains}
    ingress = set(sets[chains["x/in"].matches[0].named].members)
    assert ingress == {f"{ip['x/a']},tcp:80", f"{ip['x/d']},tcp:8080"}  # the selected pods' own numbers
    egress = set(sets[chains["y/out"].matches[0].named].members)
    assert f"{ip['x/d']},tcp:8080" in egress and f"{ip['z/c']},tcp:80" in egress and len(egress) == 10


def test_ip_blocks_are_canonical_and_excepts_a_set_of_their_own() -> None:
    _, nodes = with_policies(np("p", "x", policyTypes=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "10.244.0.2/4", "except": ["10.244.1.2/32"]}}]}]))
    sets = {s.name: s for n in nodes.values() for s in n.sets}
    (m,) = next(c for n in nodes.values() for c in n.chains).matches
    assert sets[m.peer].members == ("0.0.0.0/4",) and sets[m.peer_not].members == ("10.244.1.2/32",)


def test_no_policy_renders_nothing() -> None:
    _, nodes = with_policies()
    for node in nodes.values():
        assert node.empty and ipt.render(node) == ([], []) and nft.render(node) == ""


def test_names_are_calicos() -> None:
    assert limited_id("cali-pi-", "alpha/knp.default.access-nginx") == "cali-pi-_e8MLrhOHDfNlfSa51Ak"  # a real Calico node's
    assert limited_id("cali-pi-", "default/knp.default.haejun-policy") == "cali-pi-_Eb-vckmN-lr2eREXQcs"
    assert limited_id("cali-pi-", "a/knp.default.b") == "cali-pi-a/knp.default.b"  # short enough: not hashed
    _, nodes = with_policies(np("deny", "x"))
    chain = nodes["node-1"].chains[0]
    assert policy_chain(chain) == limited_id("cali-pi-", "x/knp.default.deny") and len(policy_chain(chain)) <= 28


GOLDEN_POLICIES = (
    np("deny-all", "x", policyTypes=["Ingress", "Egress"]),
    np("allow-from-y-b", "x", podSelector={"matchLabels": {"pod": "a"}},
       ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}],
                 "ports": [{"port": 80}, {"port": 81, "endPort": 90, "protocol": "UDP"}]}]),
    np("named", "x", podSelector={"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]},
       ingress=[{"ports": [{"port": "serve-81-tcp"}]}]),
    np("egress-cidr", "x", policyTypes=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/24"]}}]},
                                                         {"ports": [{"port": 53, "protocol": "UDP"}]}]),
)


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_iptables_golden(node: str) -> None:
    _, nodes = with_policies(*GOLDEN_POLICIES)
    chains, lines = ipt.render(nodes[node])
    sets = ipt.render_sets(nodes[node])
    text = "\n".join([*(f"create {n} {t}" + "".join(f"\nadd {n} {m}" for m in ms) for n, (t, ms) in sets.items()),
                      "*filter", *(f":{c} - [0:0]" for c in chains), *lines, "COMMIT"]) + "\n"
    check_golden(f"netpol-iptables-{node}.txt", text)


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_nftables_golden(node: str) -> None:
    _, nodes = with_policies(*GOLDEN_POLICIES)
    check_golden(f"netpol-nftables-{node}.nft", nft.render(nodes[node]))


def test_both_renderers_dispatch_the_same_pods_to_the_same_policies() -> None:
    _, nodes = with_policies(*GOLDEN_POLICIES)
    for node in nodes.values():
        chains, lines = ipt.render(node)
        text = nft.render(node)
        for ep in node.endpoints:
            for direction, ids in ((INGRESS, ep.ingress), (EGRESS, ep.egress)):
                prefix = "cali-tw-" if direction == INGRESS else "cali-fw-"
                assert (prefix + ep.iface in chains) == (ids is not None)
                assert (f"filter-{prefix}{ep.iface}" in text) == (ids is not None)
        for c in node.chains:
            assert policy_chain(c) in chains and f"filter-{policy_chain(c)}" in text


def test_an_ipv6_block_matches_nothing_in_the_ipv4_lab_and_overlapping_excepts_collapse() -> None:
    _, nodes = with_policies(np("v6", "x", policyTypes=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "::/0", "except": ["fd00::/8"]}}]}]),
                             np("v4", "y", policyTypes=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                                                             "except": ["10.0.0.0/24", "10.0.0.0/25"]}}]}]))
    sets = {s.name: s for n in nodes.values() for s in n.sets}
    chains = {c.policy: c for n in nodes.values() for c in n.chains}
    (v6,) = chains["x/v6"].matches
    assert sets[v6.peer].members == () and v6.peer_not is None  # an empty set: no IPv4 address is in it
    (v4,) = chains["y/v4"].matches
    assert sets[v4.peer_not].members == ("10.0.0.0/24",)
    for node in nodes.values():  # no IPv6 member reaches a set (its comment may name the block)
        assert not any("::" in m for _t, members in ipt.render_sets(node).values() for m in members)
        assert not any("::" in line for line in nft.render(node).splitlines() if "elements" in line)


class _Kernel:
    """Stands in for ipset/iptables-restore: records each script applied (realize.policy._run)."""

    def __init__(self) -> None:
        self.scripts: list[tuple[str, str]] = []

    def __call__(self, netns: str, cmd: list[str], data: str) -> None:
        self.scripts.append((cmd[0], data))


def test_iptables_dataplane_hooks_swaps_and_removes_everything(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from netns_lab.realize import policy as rp

    kernel = _Kernel()
    monkeypatch.setattr(rp, "_run", kernel)
    dp = rp.IptablesPolicy("ns", ipvs=True)
    _, first = with_policies(np("p", "x", ingress=[{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]))
    dp.apply(first["node-1"])
    (ipset, sets), (tool, rules) = kernel.scripts
    assert ipset == "ipset" and sets.startswith("create cali40s:") and "hash:net" in sets
    assert tool == "iptables-nft-restore" and "-I FORWARD 1 -j cali-FORWARD" in rules and "-I OUTPUT 1 -j cali-OUTPUT" in rules
    kernel.scripts.clear()
    _, second = with_policies(np("p", "x", ingress=[{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}]))
    dp.apply(second["node-1"])  # another set: created; the old one destroyed after the rules stop using it
    assert [c for c, _ in kernel.scripts] == ["ipset", "iptables-nft-restore", "ipset"]
    assert "-I FORWARD" not in kernel.scripts[1][1] and kernel.scripts[2][1].startswith("destroy cali40s:")
    kernel.scripts.clear()
    dp.apply(second["node-1"])  # nothing changed: the rules are written again, no set is touched
    assert [c for c, _ in kernel.scripts] == ["iptables-nft-restore"]
    kernel.scripts.clear()
    _, none = with_policies()
    dp.apply(none["node-1"])
    (tool, rules), (ipset, gone) = kernel.scripts
    assert "-D FORWARD -j cali-FORWARD" in rules and "-D OUTPUT -j cali-OUTPUT" in rules
    assert all(f"-X {c}" in rules for c in ("cali-FORWARD", "cali-OUTPUT", "cali-to-wl-dispatch"))
    assert gone.startswith("destroy cali40s:")


def test_a_changed_set_is_filled_aside_and_swapped_in(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from netns_lab.realize import policy as rp

    kernel = _Kernel()
    monkeypatch.setattr(rp, "_run", kernel)
    dp = rp.IptablesPolicy("ns")
    _, first = with_policies(np("p", "x", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]))
    dp.apply(first["node-1"])
    name = next(iter(ipt.render_sets(first["node-1"])))
    dp.sets[name] = ("hash:net", ("10.9.9.9/32",))  # as if the namespace's pods had changed since
    kernel.scripts.clear()
    dp.apply(first["node-1"])
    script = kernel.scripts[0][1].splitlines()
    assert script[0] == f"create cali4t:{name[8:]} hash:net -exist" and f"swap cali4t:{name[8:]} {name}" in script
    assert script[-1] == f"destroy cali4t:{name[8:]}"
