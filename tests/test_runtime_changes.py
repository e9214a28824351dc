"""Run-time changes, proven with real packets: each kind created, replaced, relabelled and
deleted on a running lab, in iptables and nftables mode (IPVS: tests/test_ipvs.py, in the VM).

One lab per proxy mode for the whole module; each test changes only objects it names
itself and leaves the shared ones (web-1, web-2, client, Service web) as it found them.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from netns_lab import certs
from netns_lab.errors import ScenarioError
from netns_lab.lab import Lab
from netns_lab.probes.connect import Probe, run_probes
from netns_lab.probes.http import get
from netns_lab.probes.resolve import resolve
from netns_lab.realize import netns
from tests.conftest import ROOT

pytestmark = pytest.mark.root
RUNTIME = os.path.join(ROOT, "tests", "scenarios", "runtime.yaml")


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    mode = request.param
    with Lab.from_file(RUNTIME, {"name": f"rt-{mode[:3]}", "cluster.proxyMode": mode}) as lab:
        yield lab


def service(name: str, ns: str = "default", **spec: Any) -> dict[str, Any]:
    spec.setdefault("selector", {"app": "web"})
    spec.setdefault("ports", [{"name": "http", "port": 80, "targetPort": "http"}])
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def pod(name: str, ns: str = "default", labels: dict[str, str] | None = None, port: int = 9376, node: str = "node-2") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"nodeName": node, "containers": [{"name": "web", "image": "netexec", "ports": [{"name": "http", "containerPort": port}]}]}}


def served(lab: Lab, src: str, ip: str, port: int, n: int = 30) -> Counter[str | None]:
    probes = [Probe(lab.netns_of(src), ip, port)] * n
    return Counter(r.served_by if r.result == "ok" else r.result for r in run_probes(probes, timeout=2, parallel=10))


def a_records(lab: Lab, name: str) -> tuple[str, ...]:
    return resolve(lab.netns_of("pod/client"), name, "A").answers


def test_a_service_created_answers_by_name_then_changes_type_and_goes(lab: Lab) -> None:
    lab.apply(service("shop"))
    ip = lab.ip_of("service/shop")
    assert a_records(lab, "shop.default.svc.cluster.local") == (ip,)
    assert set(served(lab, "pod/client", ip, 80)) == {"web-1", "web-2"}
    ext, node_ip = "external", lab.ip_of("node/node-2")

    lab.apply(service("shop", type="NodePort", ports=[{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30111}]))
    assert lab.ip_of("service/shop") == ip  # the clusterIP is kept across the type change
    assert lab.connect(ext, node_ip, 30111).result == "ok"

    lab.apply(service("shop"))  # back to ClusterIP: the node port closes
    assert lab.connect(ext, node_ip, 30111, timeout=1.0).result != "ok"
    assert lab.connect("pod/client", ip, 80).result == "ok"

    lab.apply(service("shop", type="LoadBalancer"))  # the cloud LB is provisioned at run time
    lb_ip = lab.ip_of("loadbalancer/shop")
    lab.wait_balancer_rounds()
    assert lab.connect(ext, lb_ip, 80, timeout=3.0).result == "ok"

    lab.delete("service/shop")
    assert resolve(lab.netns_of("pod/client"), "shop.default.svc.cluster.local", "A").result == "nxdomain"
    assert lab.connect("pod/client", ip, 80, timeout=1.0).result != "ok"
    assert lab.connect(ext, lb_ip, 80, timeout=1.0).result != "ok"


def test_an_external_ip_added_at_run_time_is_routed_then_withdrawn(lab: Lab) -> None:
    ip = "192.0.2.77"  # TEST-NET-1: routed by the lab's router to the nodes, never leaves the lab
    assert lab.connect("external", ip, 80, timeout=1.0).result != "ok"
    lab.apply(service("exposed", externalIPs=[ip]))
    assert lab.connect("external", ip, 80).result == "ok"
    lab.apply(service("exposed"))  # the externalIP removed: the router forgets it
    routes = subprocess.run(["ip", "-n", lab.topology.router_netns, "route"], capture_output=True, text=True).stdout
    assert ip not in routes
    assert lab.connect("external", ip, 80, timeout=1.0).result != "ok"
    lab.delete("service/exposed")


def test_external_name_to_cluster_ip_and_back(lab: Lab) -> None:
    client = lab.netns_of("pod/client")
    lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"}, "spec": {"type": "ExternalName", "externalName": "db.example.org"}})
    assert resolve(client, "db", "CNAME").answers == ("db.example.org.",)
    lab.apply(service("db", ports=[{"port": 5432, "targetPort": 9376}]))
    ip = lab.ip_of("service/db")
    assert resolve(client, "db", "A").answers == (ip,)
    assert lab.connect("pod/client", ip, 5432).result == "ok"
    lab.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"}, "spec": {"type": "ExternalName", "externalName": "db2.example.org"}})
    assert resolve(client, "db", "CNAME").answers == ("db2.example.org.",)
    assert lab.connect("pod/client", ip, 5432, timeout=1.0).result != "ok"  # no VIP any more
    lab.delete("service/db")


def test_a_pod_relabelled_out_of_the_selector_gets_no_new_connections(lab: Lab) -> None:
    ip = lab.ip_of("service/web")
    lab.label("pod/web-1", app=None, was="web")
    try:
        assert set(served(lab, "pod/client", ip, 80)) == {"web-2"}
        assert dict(lab.pod("web-1").labels) == {"was": "web"}
    finally:
        lab.label("pod/web-1", app="web", was=None)
    assert set(served(lab, "pod/client", ip, 80)) == {"web-1", "web-2"}


def test_a_pod_added_with_a_named_port_is_reached_on_its_own_number_and_deleted_whole(lab: Lab) -> None:
    lab.apply(pod("web-9", labels={"app": "web"}, port=8080))
    plan = lab.topology.pod("default/web-9")
    assert lab.connect("pod/client", str(plan.ip), 8080).result == "ok"
    assert set(served(lab, "pod/client", lab.ip_of("service/web"), 80, 45)) == {"web-1", "web-2", "web-9"}
    node = lab.topology.node(plan.node).netns
    assert plan.host_veth in subprocess.run(["ip", "-n", node, "-o", "link"], capture_output=True, text=True).stdout

    lab.delete("pod/web-9")
    assert not netns.exists(plan.netns)
    assert plan.host_veth not in subprocess.run(["ip", "-n", node, "-o", "link"], capture_output=True, text=True).stdout
    assert plan.netns not in lab.state.namespaces  # type: ignore[union-attr]
    assert set(served(lab, "pod/client", lab.ip_of("service/web"), 80)) == {"web-1", "web-2"}


def test_deleting_a_namespace_removes_its_pods_and_services(lab: Lab) -> None:
    lab.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
              pod("cart", "shop", {"app": "cart"}, node="node-1"), service("cart", "shop", selector={"app": "cart"}))
    cart = lab.topology.pod("shop/cart")
    assert set(served(lab, "pod/client", lab.ip_of("service/shop/cart"), 80, 5)) == {"cart"}
    assert resolve(lab.netns_of("pod/client"), "cart.shop", "A").result == "ok"
    lab.label("namespace/shop", team="shop")
    assert dict(next(n for n in lab.objects.namespaces if n.name == "shop").labels)["team"] == "shop"

    lab.delete("namespace/shop")
    assert not netns.exists(cart.netns)
    assert all(p.namespace != "shop" for p in lab.pods) and all(s.namespace != "shop" for s in lab.services)
    assert resolve(lab.netns_of("pod/client"), "cart.shop.svc.cluster.local", "A").result == "nxdomain"


def test_ingress_secret_and_class_at_run_time(lab: Lab) -> None:
    """The first Ingress brings the ingress controller up; a replaced TLS Secret changes the
    certificate nginx serves; an IngressClass created at run time selects the controller;
    what an Ingress uses cannot be deleted from under it."""
    with tempfile.TemporaryDirectory() as tmp:
        first = certs.generate(["shop.example.com"], os.path.join(tmp, "a"), name="shop-tls")
        second = certs.generate(["shop.example.com"], os.path.join(tmp, "b"), name="shop-tls")

        def secret(paths: dict[str, str]) -> dict[str, Any]:
            import yaml

            with open(paths["secret.yaml"]) as fh:
                return yaml.safe_load(fh)  # type: ignore[no-any-return]

        def ca(paths: dict[str, str]) -> str:
            with open(paths["ca.crt"]) as fh:
                return fh.read()

        ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "shop"},
                   "spec": {"ingressClassName": "lab", "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
                            "rules": [{"host": "shop.example.com", "http": {"paths": [
                                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}
        klass = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "lab"},
                 "spec": {"controller": "k8s.io/ingress-nginx"}}
        lab.apply(secret(first), klass, ingress)
        ext, lb = lab.netns_of("external"), lab.ip_of("loadbalancer/ingress-nginx/ingress-nginx")
        lab.wait_balancer_rounds()
        r = get(ext, "https://shop.example.com/x", lb, ca_pem=ca(first))
        assert r.result == "ok" and r.status == 200 and r.served_by in ("web-1", "web-2"), r

        lab.apply(secret(second))  # the certificate changes under a running nginx
        assert get(ext, "https://shop.example.com/x", lb, ca_pem=ca(second)).status == 200
        assert get(ext, "https://shop.example.com/x", lb, ca_pem=ca(first)).result != "ok"  # the old CA no longer verifies

        for used in ("secret/shop-tls", "ingressclass/lab", "service/web"):
            with pytest.raises(ScenarioError, match='Forbidden: ingresses "default/shop" would break'):
                lab.delete(used)
        lab.delete("ingress/shop")
        assert get(ext, "http://shop.example.com/x", lb).status == 404  # nginx's default server now
        lab.delete("secret/shop-tls", "ingressclass/lab")
