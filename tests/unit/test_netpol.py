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
    assert all(e.ingress == () or e.ingress is None for e in eps.values() if e.pod.startswith("y/"))
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
