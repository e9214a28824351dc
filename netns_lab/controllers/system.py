"""The cluster's own objects, as kubeadm/kind (and the ingress-nginx manifest) create them:
cluster DNS in every lab, an ingress controller (nginx or HAProxy) for the Ingresses of its
classes.

``kube-system/coredns`` (image ``netns-lab/dns``, served by :mod:`netns_lab.services.dns`)
behind the ``kube-system/kube-dns`` Service at ``cluster.dnsIP``, ports 53/UDP and 53/TCP.
The pod is pinned to the first node and planned after every user pod, so it never shifts
the addresses users' pods get.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from netns_lab.model import (
    DNS_IMAGE,
    HAPROXY_IMAGE,
    INGRESS_IMAGE,
    ClusterConfig,
    Container,
    ContainerPort,
    Ingress,
    IngressClass,
    Namespace,
    Pod,
    Service,
    ServicePort,
)

DNS_LABELS = (("k8s-app", "kube-dns"),)


def cluster_dns(cluster: ClusterConfig) -> tuple[Pod, Service]:
    pod = Pod(
        name="coredns",
        namespace="kube-system",
        labels=DNS_LABELS,
        node_name=cluster.nodes[0],
        containers=(Container("coredns", DNS_IMAGE, (ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp"))),),
        dns_policy="Default",
        enable_service_links=False,
    )
    service = Service(
        name="kube-dns",
        namespace="kube-system",
        selector=DNS_LABELS,
        ports=(ServicePort(53, "UDP", "dns", "dns"), ServicePort(53, "TCP", "dns-tcp", "dns-tcp")),
        cluster_ip=str(cluster.dns_ip),
        labels=(("k8s-app", "kube-dns"), ("kubernetes.io/name", "CoreDNS")),
    )
    return pod, service


@dataclass(frozen=True)
class IngressFamily:
    """One ingress controller the lab can run (DESIGN.md, "Ingress controllers"): the
    ``spec.controller`` of the IngressClasses it serves, and the pod and Service it runs as."""

    controller: str
    namespace: str
    pod: str
    service: str
    image: str
    labels: tuple[tuple[str, str], ...]
    builtin_class: str | None  # a class name the lab knows without an IngressClass object


NGINX = IngressFamily("k8s.io/ingress-nginx", "ingress-nginx", "ingress-nginx-controller", "ingress-nginx", INGRESS_IMAGE,
                      (("app.kubernetes.io/component", "controller"), ("app.kubernetes.io/name", "ingress-nginx")), "nginx")
HAPROXY = IngressFamily("haproxy-ingress.github.io/controller", "haproxy-ingress", "haproxy-ingress-controller", "haproxy-ingress",
                        HAPROXY_IMAGE, (("app.kubernetes.io/name", "haproxy-ingress"),), None)
FAMILIES = (NGINX, HAPROXY)
INGRESS_NAMESPACE = NGINX.namespace
INGRESS_LABELS = NGINX.labels


def family_of(ingress: Ingress, classes: dict[str, IngressClass]) -> IngressFamily | None:
    """Which controller serves ``ingress``: its class's ``spec.controller``; without a class,
    the default IngressClass's (annotation ``ingressclass.kubernetes.io/is-default-class``),
    else the lab's ingress-nginx (its built-in class ``nginx``). None: no controller of the
    lab serves that class (the caller refuses the Ingress)."""
    name = ingress.class_name
    if name is None:
        defaults = sorted(c.name for c in classes.values() if c.default)
        if not defaults:
            return NGINX
        name = defaults[0]
    cls = classes.get(name)
    if cls is None:
        return next((f for f in FAMILIES if f.builtin_class == name), None)
    return next((f for f in FAMILIES if f.controller == cls.controller), None)


def stamp_default_class(ingress: Ingress, classes: dict[str, IngressClass]) -> Ingress:
    """The DefaultIngressClass admission plugin: an Ingress created without a class gets the
    default class's name, once; a default class marked later, or removed, moves nothing."""
    defaults = [c.name for c in classes.values() if c.default]
    if ingress.class_name is not None or len(defaults) != 1:
        return ingress
    return replace(ingress, class_name=defaults[0])


def served_by(family: IngressFamily, ingresses: tuple[Ingress, ...], classes: tuple[IngressClass, ...]) -> tuple[Ingress, ...]:
    """The Ingresses ``family`` serves (each Ingress by one controller only)."""
    by_name = {c.name: c for c in classes}
    return tuple(i for i in ingresses if family_of(i, by_name) is family)


def ingress_controller(cluster: ClusterConfig, family: IngressFamily = NGINX) -> tuple[Namespace, Pod, Service]:
    """The controller's pod (real nginx or HAProxy, on the first node) behind its Service:
    LoadBalancer with externalTrafficPolicy Local (as the cloud manifests ship it: the
    client's address reaches the proxy) or NodePort."""
    pod = Pod(
        name=family.pod,
        namespace=family.namespace,
        labels=family.labels,
        node_name=cluster.nodes[0],
        containers=(Container("controller", family.image, (ContainerPort(80, "TCP", "http"), ContainerPort(443, "TCP", "https"))),),
        enable_service_links=False,
    )
    lb = cluster.ingress_service_type == "LoadBalancer"
    service = Service(
        name=family.service,
        namespace=family.namespace,
        type=cluster.ingress_service_type,
        selector=family.labels,
        ports=(ServicePort(80, "TCP", "http", "http"), ServicePort(443, "TCP", "https", "https")),
        external_traffic_policy="Local" if lb else "Cluster",
        labels=family.labels,
    )
    return Namespace(family.namespace), pod, service
