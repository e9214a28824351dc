"""The cluster's own objects, as kubeadm/kind (and the ingress-nginx manifest) create them:
cluster DNS in every lab, the ingress controller in labs that have an Ingress.

``kube-system/coredns`` (image ``netns-lab/dns``, served by :mod:`netns_lab.services.dns`)
behind the ``kube-system/kube-dns`` Service at ``cluster.dnsIP``, ports 53/UDP and 53/TCP.
The pod is pinned to the first node and planned after every user pod, so it never shifts
the addresses users' pods get.
"""

from __future__ import annotations

from netns_lab.model import (
    DNS_IMAGE,
    INGRESS_IMAGE,
    ClusterConfig,
    Container,
    ContainerPort,
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


INGRESS_NAMESPACE = "ingress-nginx"
INGRESS_LABELS = (("app.kubernetes.io/component", "controller"), ("app.kubernetes.io/name", "ingress-nginx"))


def ingress_controller(cluster: ClusterConfig) -> tuple[Namespace, Pod, Service]:
    """``ingress-nginx/ingress-nginx-controller`` (real nginx, on the first node) behind the
    ``ingress-nginx/ingress-nginx`` Service: LoadBalancer with externalTrafficPolicy Local (as
    the cloud manifests ship it: the client's address reaches nginx) or NodePort."""
    pod = Pod(
        name="ingress-nginx-controller",
        namespace=INGRESS_NAMESPACE,
        labels=INGRESS_LABELS,
        node_name=cluster.nodes[0],
        containers=(Container("controller", INGRESS_IMAGE, (ContainerPort(80, "TCP", "http"), ContainerPort(443, "TCP", "https"))),),
        enable_service_links=False,
    )
    lb = cluster.ingress_service_type == "LoadBalancer"
    service = Service(
        name="ingress-nginx",
        namespace=INGRESS_NAMESPACE,
        type=cluster.ingress_service_type,
        selector=INGRESS_LABELS,
        ports=(ServicePort(80, "TCP", "http", "http"), ServicePort(443, "TCP", "https", "https")),
        external_traffic_policy="Local" if lb else "Cluster",
        labels=INGRESS_LABELS,
    )
    return Namespace(INGRESS_NAMESPACE), pod, service
