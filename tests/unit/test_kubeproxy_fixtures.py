"""kube-proxy's own expected rules, line for line: every fixture under tests/kubeproxy/
(ported from kubernetes/kubernetes pkg/proxy/{nftables,iptables}/proxier_test.go, v1.34
generation) rendered by the lab's renderers and compared after upstream's normalisation.
The differences allowed are listed in tests/kubeproxy/normalise.py DIFFERENCES, and only
those: a renderer change that moves one rule, comment or element fails here."""

from __future__ import annotations

import difflib

import pytest

from netns_lab.proxy import iptables as ipt
from netns_lab.proxy import nftables as nft
from tests.kubeproxy import fixtures, normalise

STALE_CHAINS = {"sync-proxy-rules-repeated-3", "sync-proxy-rules-repeated-7", "sync-proxy-rules-repeated-9"}


def _diff(expected: list[str], got: list[str]) -> str:
    return "\n".join(difflib.unified_diff(expected, got, "kube-proxy", "netns-lab", lineterm="", n=1))


@pytest.mark.parametrize("name", fixtures.names("nftables"))
def test_nftables_rules_are_kube_proxys(name: str) -> None:
    fx = fixtures.load("nftables", name)
    got = normalise.nft_sorted(normalise.nft_dump(nft.full_text(fx.ctx, fx.ports)))
    expected = normalise.nft_sorted(fx.expected, drop_empty_chains=name in STALE_CHAINS)
    assert got == expected, _diff(expected, got)


@pytest.mark.parametrize("name", fixtures.names("iptables"))
def test_iptables_rules_are_kube_proxys(name: str) -> None:
    """A state of TestSyncProxyRulesRepeated is reached as upstream reaches it: the same
    sync object through every earlier state, partial syncs where kube-proxy made partial
    ones, so what is compared is the restore input of that sync (deleted chains included)."""
    fx = fixtures.load("iptables", name)
    steps = [fx]
    while steps[0].proxier.get("previousState", "none") != "none":
        steps.insert(0, fixtures.load("iptables", steps[0].proxier["previousState"][:-5]))
    sync = ipt.IptablesSync(fx.ctx)
    for step in steps:
        text = sync.restore_input(step.ports, full=bool(step.proxier.get("fullSync", True)), existing=set(sync.chains))
    got = normalise.ipt_sorted(text)
    expected = normalise.ipt_sorted(fx.expected)
    assert got == expected, _diff(expected, got)


def test_there_are_enough_fixtures() -> None:
    """The issue's floor: kube-proxy's overall test and ten more states per mode."""
    for mode in ("nftables", "iptables"):
        names = fixtures.names(mode)
        assert "overall" in names and len(names) >= 11, (mode, names)


def test_the_normalisation_sees_a_moved_rule() -> None:
    """The comparison is not blind: two rules of one chain swapped, or an element's comment
    changed, is a difference (as in upstream's helper)."""
    fx = fixtures.load("nftables", "overall")
    lines = normalise.nft_sorted(fx.expected)
    i = next(i for i, ln in enumerate(lines) if "masquerading mark and" in ln)
    swapped = lines[:i] + [lines[i + 1], lines[i]] + lines[i + 2:]
    assert normalise.nft_sorted("\n".join(swapped)) != lines
    assert normalise.nft_sorted(fx.expected.replace('comment "ns6/svc6:p80"', 'comment "ns6/svc6"')) != lines


def _glue_rules(glue: str) -> dict[str, list[tuple[str, str]]]:
    """chain -> [(jump target, --match-set name or "")], nat rules then filter rules (as
    upstream's checkIptables reads the fake's two dumps, so KUBE-NODE-PORT is both)."""
    tables: dict[str, dict[str, list[tuple[str, str]]]] = {"nat": {}, "filter": {}}
    table = ""
    for line in glue.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            words = line.split()
            jump = words[words.index("-j") + 1]
            matchset = words[words.index("--match-set") + 1] if "--match-set" in words else ""
            tables[table].setdefault(words[1], []).append((jump, matchset))
    out: dict[str, list[tuple[str, str]]] = {}
    for table in ("nat", "filter"):
        for chain, rules in tables[table].items():
            out.setdefault(chain, []).extend(rules)
    return out


def _reals(vs) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(f"{ip}:{port}" for ip, port in vs.reals)


@pytest.mark.parametrize("name", fixtures.names("ipvs"))
def test_ipvs_state_is_kube_proxys(name: str) -> None:
    """kube-proxy's IPVS tests, with their own comparisons (see tests/kubeproxy/ipvs/*.yaml
    notes): whole IPVS state or checkIPVS, exact ipsets per listed set, and per listed chain the
    rules' targets and sets in order (checkIptables)."""
    from netns_lab.proxy import ipvs

    fx = fixtures.load("ipvs", name)
    d = fx.data
    plan = ipvs.render(fx.ctx, fx.ports, d["proxier"].get("scheduler", "rr"))
    services = plan.services
    check = d.get("ipvsCheck")
    if "virtualServerCount" in d:
        assert len(services) == d["virtualServerCount"], sorted(services)
    for want in d.get("virtualServers") or []:
        wanted_reals = [f"{r['address']}:{r['port']}" for r in want.get("realServers") or []]
        if check == "exact":
            vs = services[(want["address"], want["port"], want["protocol"])]
            assert vs.scheduler == want["scheduler"] and (vs.persistence or 0) == want["persistentTimeout"], vs
            assert _reals(vs) == wanted_reals, vs
            continue
        addresses = want.get("addressOneOf") or ([want["address"]] if "address" in want else None)
        found = [vs for vs in services.values() if (addresses is None or vs.addr in addresses)
                 and want.get("port", vs.port) == vs.port and want.get("protocol", vs.protocol) == vs.protocol]
        if want.get("assertedOnlyIfPresent") and not found:
            continue
        assert found, (want, sorted(services))
        vs = found[0]
        if "realServerCount" in want:
            assert len(vs.reals) == want["realServerCount"], vs
        elif "realServers" in want:
            assert (len(vs.reals) == len(wanted_reals) if check == "checkIPVS" and len(wanted_reals) != 1
                    else _reals(vs) == wanted_reals), (vs, wanted_reals)
        if "realServersEach" in want:
            each = want["realServersEach"]
            assert all(r == (each["address"], each["port"]) for r in vs.reals), vs
    if check == "exact":
        assert len(services) == len(d["virtualServers"]), sorted(services)
    for field, value in (d.get("everyVirtualServer") or {}).items():
        assert field == "persistentTimeout" and all(vs.persistence == value for vs in services.values()), services
    for set_name, entries in (d.get("ipsets") or {}).items():
        assert sorted(plan.sets[set_name]) == sorted(entries), set_name
    for set_name, count in (d.get("ipsetEntryCounts") or {}).items():
        assert len(plan.sets[set_name]) == count, set_name
    if "kubeIpvs0Addresses" in d:
        assert sorted(plan.vips) == sorted(d["kubeIpvs0Addresses"])  # kube-proxy lists them in binding order
    glue = ipvs.iptables_glue(fx.ctx, plan)
    rules = _glue_rules(glue)
    for chain, expected in (d.get("iptables") or {}).items():
        assert rules.get(chain, []) == [(r["JumpChain"], r.get("MatchSet") or "") for r in expected], chain
    for chain, first in (d.get("iptablesFirstRule") or {}).items():
        line = next(ln for ln in glue.splitlines() if ln.startswith(f"-A {chain} "))
        assert f"-s {first['SourceAddress']}" in line and line.endswith(f"-j {first['Jump']}"), line
    for rc in d.get("iptablesRuleChecks") or []:
        line = next(ln for ln in glue.splitlines() if ln.startswith(f"-A {rc['chain']} ") and f"-j {rc['firstRuleWithJump']}" in ln
                    and "--match-set" not in ln)
        assert line.endswith("--random-fully") == rc["randomFully"], line
    for key, table in (("natChains", "nat"), ("filterChains", "filter")):
        if key in d:
            section = glue.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0]
            declared = [ln for ln in section.splitlines() if ln.startswith(":")]
            assert declared == d[key].strip().splitlines(), declared
