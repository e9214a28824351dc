"""Checks that cannot mean anything and Service fields the lab does not act on are judged at
load, as the API server judges a manifest: the valid forms load, the invalid ones exit 2.

The refused forms each have a file in tests/bad_scenarios/; here are their valid
counterparts and the edges (exactly 253 characters, a 63-character label, null = unset).
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from netns_lab.errors import ScenarioError
from netns_lab.scenario import k8s, load_scenario

HEAD = """\
apiVersion: netns-lab/v1
kind: Scenario
name: v
"""
PODS = """\
objects:
  - apiVersion: v1
    kind: Pod
    metadata: {name: web, labels: {app: web}}
    spec:
      containers: [{name: web, image: netexec, ports: [{containerPort: 9376}]}]
  - apiVersion: v1
    kind: Pod
    metadata: {name: client}
    spec:
      containers: [{name: client, image: netexec}]
"""


def _load(tmp_path: Any, text: str) -> Any:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return load_scenario(str(p))


def checks(tmp_path: Any, body: str) -> Any:
    """Load the two-pod scenario with ``body`` as its checks."""
    return _load(tmp_path, HEAD + PODS + "checks:\n" + textwrap.indent(textwrap.dedent(body), "  "))


def service(tmp_path: Any, spec: str, cluster: str = "") -> Any:
    """Load a scenario with one Service ``web`` of this spec (flow style)."""
    text = HEAD + cluster + PODS + f"  - {{apiVersion: v1, kind: Service, metadata: {{name: web}}, spec: {spec}}}\n"
    return _load(tmp_path, text)


def refused(fn: Any, *args: str) -> str:
    with pytest.raises(ScenarioError) as info:
        fn(*args)
    text = str(info.value)
    assert "\n" not in text
    return text


# --- Service fields -------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["http", "h2c", "kubernetes.io/h2c", "kubernetes.io/ws", "example.com/my-proto_v2"])
def test_app_protocol_qualified_names_load(tmp_path, proto: str) -> None:  # type: ignore[no-untyped-def]
    s = service(tmp_path, f"{{selector: {{app: web}}, ports: [{{port: 80, targetPort: 9376, appProtocol: {proto}}}]}}")
    assert s.service("web").ports[0].port == 80  # validated, then dropped: nothing in the lab reads it


@pytest.mark.parametrize(("proto", "message"), [
    ("a/b/c", "a qualified name must consist of"),
    ("/h2c", "prefix part must be non-empty"),
    ("Example.com/h2c", "prefix part a lowercase RFC 1123 subdomain"),
    ("-h2c", "name part must consist of"),
    ("x" * 64, "name part must be no more than 63 characters"),
])
def test_app_protocol_invalid(tmp_path, proto: str, message: str) -> None:  # type: ignore[no-untyped-def]
    text = refused(service, tmp_path, f'{{selector: {{app: web}}, ports: [{{port: 80, appProtocol: "{proto}"}}]}}')
    assert f'objects[2].spec.ports[0].appProtocol: Invalid value: "{proto}": {message}' in text


@pytest.mark.parametrize("td", ["PreferClose", "PreferSameZone", "PreferSameNode"])
def test_traffic_distribution_v1_34_values_load(tmp_path, td: str) -> None:  # type: ignore[no-untyped-def]
    service(tmp_path, f"{{selector: {{app: web}}, ports: [{{port: 80}}], trafficDistribution: {td}}}")


def test_single_stack_ipv4_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = service(tmp_path, "{selector: {app: web}, ports: [{port: 80}], ipFamilyPolicy: SingleStack, ipFamilies: [IPv4]}")
    assert s.service("web").cluster_ip is not None


def test_prefer_dual_stack_on_single_stack_gets_one_family(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """As on any single-stack cluster: accepted, and the Service gets one (IPv4) clusterIP."""
    for families in ("", ", ipFamilies: [IPv4]"):
        s = service(tmp_path, f"{{selector: {{app: web}}, ports: [{{port: 80}}], ipFamilyPolicy: PreferDualStack{families}}}")
        ip = s.service("web").cluster_ip
        assert ip is not None and ":" not in ip


def test_headless_selectorless_service_may_name_both_families(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The allocator's special case: such a Service never gets an IP, so any families are allowed."""
    s = service(tmp_path, "{clusterIP: None, ports: [{port: 80}], ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6]}")
    assert s.service("web").headless
    # ... but not with a selector: then the cluster must have both families
    text = refused(service, tmp_path, "{clusterIP: None, selector: {app: web}, ports: [{port: 80}], ipFamilyPolicy: RequireDualStack}")
    assert 'spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services' in text


def test_two_families_with_prefer_dual_stack_name_the_missing_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = refused(service, tmp_path, "{selector: {app: web}, ports: [{port: 80}], ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv4, IPv6]}")
    assert 'spec.ipFamilies[1]: Invalid value: "IPv6": not configured on this cluster' in text


def test_family_must_match_the_requested_cluster_ip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = refused(service, tmp_path, "{clusterIP: 10.96.0.50, ports: [{port: 80}], ipFamilies: [IPv6]}")
    assert 'spec.clusterIPs[0]: Invalid value: "10.96.0.50": expected an IPv6 value as indicated by `ipFamilies[0]`' in text


def test_external_name_takes_no_ip_families(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = refused(service, tmp_path, "{type: ExternalName, externalName: db.example.com, ipFamilyPolicy: SingleStack}")
    assert "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services" in text


def test_external_ip_next_to_the_lab_machines_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Only the exact addresses of the router, the cloud LB and the clients are refused."""
    s = service(tmp_path, "{selector: {app: web}, ports: [{port: 80}], externalIPs: [10.0.0.253, 203.0.113.2, 203.0.113.11]}")
    assert s.service("web").external_ips == ("10.0.0.253", "203.0.113.2", "203.0.113.11")


@pytest.mark.parametrize(("ip", "what"), [
    ("10.1.0.1", "the lab's router on the node network"),
    ("198.18.0.1", "the lab's router on the external network"),
    ("10.1.0.254", "the cloud load balancer"),
    ("198.18.0.10", 'the external client "external"'),
    ("198.18.0.12", 'the external client "bob"'),
])
def test_external_ip_of_a_lab_machine_follows_the_address_plan(tmp_path, ip: str, what: str) -> None:  # type: ignore[no-untyped-def]
    cluster = "cluster:\n  nodeCIDR: 10.1.0.0/24\n  external: {cidr: 198.18.0.0/24, clients: [alice, bob]}\n"
    text = refused(service, tmp_path, f"{{selector: {{app: web}}, ports: [{{port: 80}}], externalIPs: [{ip}]}}", cluster)
    assert f'spec.externalIPs[0]: Invalid value: "{ip}": is the address of {what}' in text


def test_node_port_range_beside_the_agent_ports_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = service(tmp_path, "{type: NodePort, selector: {app: web}, ports: [{port: 80}]}", "cluster:\n  nodePortRange: 10251-10255\n")
    assert s.service("web").ports[0].node_port == 10251


@pytest.mark.parametrize("value", ["30000-3276٧", "+30000-32767", "30_000-32767", " 30000-32767", "3" * 5000])
def test_node_port_range_is_ascii_digits(tmp_path, value: str) -> None:  # type: ignore[no-untyped-def]
    text = refused(service, tmp_path, "{selector: {app: web}, ports: [{port: 80}]}", f'cluster:\n  nodePortRange: "{value}"\n')
    assert 'must be a port range like "30000-32767"' in text


# --- checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "port"), [("http://web.example/", 80), ("https://web.example/", 443),
                                           ("http://web.example:9376/a?b=c", 9376), ("http://web.example:65535", 65535)])
def test_url_ports(tmp_path, url: str, port: int) -> None:  # type: ignore[no-untyped-def]
    s = checks(tmp_path, f"- {{from: pod/client, http: '{url}', address: pod/web}}\n")
    assert s.checks[0].port == port


@pytest.mark.parametrize("url", ["http://web.example:0/", "http://web.example:/", "http://web.example:８０/",
                                 "http://web.example:٨٠/", "http://web.example:99999999999/"])
def test_url_port_written_out_must_be_a_port(tmp_path, url: str) -> None:  # type: ignore[no-untyped-def]
    text = refused(checks, tmp_path, f"- {{from: pod/client, http: '{url}', address: pod/web}}\n")
    assert f'checks[0].http: Invalid value: "{url}": the port must be a number between 1 and 65535, inclusive' in text


@pytest.mark.parametrize("url", ["http://web.example/a b", "http://web.example/é", "http://web.example/#top"])
def test_url_path_is_printable_ascii(tmp_path, url: str) -> None:  # type: ignore[no-untyped-def]
    assert "must be an http:// or https:// URL" in refused(checks, tmp_path, f"- {{from: pod/client, http: '{url}', address: pod/web}}\n")


@pytest.mark.parametrize("target", ["pod/web:0", "pod/web:65536", "pod/web:٩٣٧٦", "pod/web:+80", "pod/web:8_0", "pod/web:" + "9" * 5000])
def test_connect_port(tmp_path, target: str) -> None:  # type: ignore[no-untyped-def]
    text = refused(checks, tmp_path, f"- {{from: pod/client, connect: '{target}'}}\n")
    assert "checks[0].connect: Invalid value:" in text and "must be HOST:PORT with PORT 1-65535" in text


def test_address_names_a_host_not_a_port(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = refused(checks, tmp_path, "- {from: pod/client, http: 'http://web.example/', address: '10.0.0.2:80'}\n")
    assert 'checks[0].address: Invalid value: "10.0.0.2:80": names the host to connect to, without a port' in text


def test_dns_name_length_edges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    assert len(name) == 253
    s = checks(tmp_path, f"- {{from: pod/client, resolve: {name}., expect: {{result: nxdomain}}}}\n")
    assert s.checks[0].target.name == name + "."
    text = refused(checks, tmp_path, f"- {{from: pod/client, resolve: {name}b, expect: {{result: nxdomain}}}}\n")
    assert "must be no more than 253 characters" in text
    text = refused(checks, tmp_path, f"- {{from: pod/client, resolve: {'a' * 64}.example, expect: {{result: nxdomain}}}}\n")
    assert "not a DNS name" in text


def test_host_label_length_edges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    checks(tmp_path, f"- {{from: pod/client, connect: '{'a' * 63}.example.com:80', expect: {{result: failed}}}}\n")
    text = refused(checks, tmp_path, f"- {{from: pod/client, ping: '{'a' * 64}.example.com'}}\n")
    assert "not a host name: each label must be no more than 63 characters (one has 64)" in text
    text = refused(checks, tmp_path, f"- {{from: pod/client, http: 'http://{'a' * 64}.example/', expect: {{result: failed}}}}\n")
    assert "checks[0].http: Invalid value:" in text and "each label must be no more than 63 characters" in text


def test_query_name_with_trailing_newline_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = refused(checks, tmp_path, '- {from: pod/client, resolve: "web.default.svc.cluster.local\\n"}\n')
    assert "not a DNS name" in text


@pytest.mark.parametrize("expect", ["{result: ok, servedBy: [web], clientIP: pod/client}", "{servedBy: web}",
                                    "{result: failed}", "{result: refused}"])
def test_consistent_expectations_load(tmp_path, expect: str) -> None:  # type: ignore[no-untyped-def]
    checks(tmp_path, f"- {{from: pod/client, connect: 'pod/web:9376', expect: {expect}}}\n")


@pytest.mark.parametrize(("action", "expect", "field", "result"), [
    ("connect: 'pod/web:9376'", "{result: failed, servedBy: [web]}", "servedBy", "failed"),
    ("connect: 'pod/web:9376'", "{result: unreachable, clientIP: self}", "clientIP", "unreachable"),
    ("http: 'http://web.example/', address: pod/web", "{result: refused, status: 200}", "status", "refused"),
    ("http: 'http://web.example/', address: pod/web", "{result: timeout, body: hello}", "body", "timeout"),
    ("resolve: web.default.svc.cluster.local", "{result: servfail, answers: []}", "answers", "servfail"),
])
def test_contradictory_expectations(tmp_path, action: str, expect: str, field: str, result: str) -> None:  # type: ignore[no-untyped-def]
    text = refused(checks, tmp_path, f"- {{from: pod/client, {action}, expect: {expect}}}\n")
    assert f'checks[0].expect.{field}: Forbidden: may not be set when result is "{result}"' in text


def test_served_by_twice_the_same_pod(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = refused(checks, tmp_path, "- {from: pod/client, connect: 'pod/web:9376', expect: {servedBy: [web, pod/default/web]}}\n")
    assert 'checks[0].expect.servedBy[1]: Duplicate value: "pod/default/web"' in text


@pytest.mark.parametrize("status", [100, 200, 599])
def test_http_status_range(tmp_path, status: int) -> None:  # type: ignore[no-untyped-def]
    checks(tmp_path, f"- {{from: pod/client, http: 'http://web.example/', address: pod/web, expect: {{status: {status}}}}}\n")
    text = refused(checks, tmp_path, f"- {{from: pod/client, http: 'http://web.example/', address: pod/web, expect: {{status: {status * 10}}}}}\n")
    assert f"checks[0].expect.status: Invalid value: {status * 10}: must be an HTTP status code" in text


def test_env_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = checks(tmp_path, "- {from: pod/client, env: {KUBERNETES_SERVICE_HOST: service/kubernetes, _x: null, WEB_SERVICE_HOST: null}}\n")
    assert [k for k, _ in s.checks[0].env] == ["KUBERNETES_SERVICE_HOST", "_x", "WEB_SERVICE_HOST"]
    for bad in ("1X", "A.B", "A-B", "É"):
        assert f'checks[0].env.{bad}: Invalid value: "{bad}": a valid C identifier' in refused(checks, tmp_path, f"- {{from: pod/client, env: {{'{bad}': null}}}}\n")
    assert "checks[0].env: Required value" in refused(checks, tmp_path, "- {from: pod/client, env: {}}\n")


@pytest.mark.parametrize(("check", "field", "kind"), [
    ("{from: pod/client, ping: pod/web, protocol: tcp}", "protocol", "a ping"),
    ("{from: pod/client, resolve: web.default.svc.cluster.local, count: 3}", "count", "a resolve"),
    ("{from: pod/client, connect: 'pod/web:9376', type: A}", "type", "a connect"),
    ("{from: pod/client, connect: 'pod/web:9376', insecure: false}", "insecure", "a connect"),
    ("{from: pod/client, ping: pod/web, address: pod/web}", "address", "a ping"),
    ("{from: pod/client, http: 'http://web.example/', address: pod/web, protocol: http}", "protocol", "an http"),
    ("{matrix: pod-to-pod, count: 2}", "count", "a matrix"),
    ("{matrix: pod-to-pod, expect: {result: ok}}", "expect", "a matrix"),
    ("{from: pod/client, env: {X: null}, expect: {result: ok}}", "expect", "an env"),
    ("{from: pod/client, env: {X: null}, protocol: udp}", "protocol", "an env"),
])
def test_options_that_do_not_apply(tmp_path, check: str, field: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    text = refused(checks, tmp_path, f"- {check}\n")
    assert f"checks[0].{field}: Forbidden: may not be set for {kind} check (its fields: " in text


def test_null_options_are_unset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = checks(tmp_path, """\
        - {from: pod/client, ping: pod/web, protocol: null, type: null}
        - {from: pod/client, connect: 'pod/web:9376', count: null, protocol: null}
        - {from: pod/client, resolve: web.default.svc.cluster.local, type: null, protocol: udp}
        """)
    assert s.checks[0].action == "ping"
    assert (s.checks[1].count, s.checks[1].protocol) == (1, "tcp")
    assert (s.checks[2].record_type, s.checks[2].protocol) == ("A", "udp")


def test_resolve_speaks_dns_over_udp_or_tcp_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = checks(tmp_path, "- {from: pod/client, resolve: web.default.svc.cluster.local}\n")
    assert s.checks[0].protocol == "tcp"  # unchanged default
    text = refused(checks, tmp_path, "- {from: pod/client, resolve: web.default.svc.cluster.local, protocol: http}\n")
    assert 'checks[0].protocol: Unsupported value: "http": supported values: tcp, udp' in text


# --- the API server's name rules, in full -----------------------------------------------------


def test_names_with_a_trailing_newline_are_invalid() -> None:
    """Python's ``$`` matches before a final newline; Go's does not, and neither may we."""
    assert k8s.dns1123_label("web\n") and k8s.dns1123_subdomain("web.example\n") and k8s.dns1035_label("web\n")
    assert k8s.label_value("v1\n") and k8s.qualified_name("app\n") and k8s.port_name("http\n") and k8s.c_identifier("X\n")
    assert not k8s.dns1123_label("web") and not k8s.qualified_name("app.kubernetes.io/name")


def test_ascii_int() -> None:
    assert [k8s.ascii_int(t) for t in ("80", "080", "65535", "٨٠", "８０", "+80", "8_0", " 80", "", "123456")] == \
        [80, 80, 65535, None, None, None, None, None, None, None]
