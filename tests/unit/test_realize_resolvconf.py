"""A pod's resolv.conf never gains a line its model did not ask for (the scenario loader
refuses such values; this is the writer's own check, for a model that skipped it)."""

from __future__ import annotations

import pytest

from netns_lab.model import DnsConfig, Pod
from netns_lab.realize.resolvconf import resolv_conf

HOSTILE = ["x\nnameserver 192.0.2.53", "x nameserver", "x\r", "x\x00", "x\u2028nameserver 192.0.2.53"]


def _lines(pod: Pod) -> list[str]:
    return resolv_conf(pod, "10.96.0.10", "cluster.local").splitlines()


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["search", "option-name", "option-value", "nameserver", "pod-name"])
def test_a_hostile_value_is_refused_not_written(field: str, value: str) -> None:
    cfg = DnsConfig(
        nameservers=(value,) if field == "nameserver" else (),
        searches=(value,) if field == "search" else (),
        options=(((value, None),) if field == "option-name" else ((("ndots", value),) if field == "option-value" else ())),
    )
    pod = Pod(value if field == "pod-name" else "p", dns_config=cfg)
    with pytest.raises(ValueError):
        _lines(pod)


@pytest.mark.parametrize("cfg", [DnsConfig(options=(("ndots:1", None),)), DnsConfig(options=(("", None),)), DnsConfig(searches=("",)),
                                 DnsConfig(nameservers=("",))], ids=["colon-in-name", "empty-name", "empty-search", "empty-nameserver"])
def test_an_option_name_with_a_colon_or_an_empty_word_is_refused(cfg: DnsConfig) -> None:
    with pytest.raises(ValueError):
        _lines(Pod("p", dns_config=cfg))


def test_ordinary_values_still_render() -> None:
    pod = Pod("p", dns_config=DnsConfig(("192.0.2.1",), ("a.example",), (("ndots", "2"), ("edns0", None), ("attempts", ""))))
    lines = _lines(pod)
    assert lines[1:] == ["search default.svc.cluster.local svc.cluster.local cluster.local a.example",
                         "nameserver 10.96.0.10", "nameserver 192.0.2.1", "options ndots:2 edns0 attempts:"]


def test_hosts_file_is_kubelets() -> None:
    from netns_lab.model import Pod
    from netns_lab.realize.resolvconf import hosts_file

    plain = hosts_file(Pod("web-1", "shop"), "10.244.1.5", "cluster.local").splitlines()
    assert plain[0] == "# Kubernetes-managed hosts file." and plain[1] == "127.0.0.1\tlocalhost"
    assert plain[-1] == "10.244.1.5\tweb-1"
    named = hosts_file(Pod("p", "shop", hostname="h1", subdomain="sub"), "10.244.1.6", "cluster.local").splitlines()
    assert named[-1] == "10.244.1.6\th1.sub.shop.svc.cluster.local\th1"
    import pytest

    with pytest.raises(ValueError):
        hosts_file(Pod("p", "shop", hostname="h1\n8.8.8.8 evil"), "10.244.1.6", "cluster.local")
