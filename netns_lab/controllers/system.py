"""The cluster's own objects every lab has, as kubeadm/kind create them: cluster DNS.

``kube-system/coredns`` (image ``netns-lab/dns``, served by :mod:`netns_lab.services.dns`)
behind the ``kube-system/kube-dns`` Service at ``cluster.dnsIP``, ports 53/UDP and 53/TCP.
The pod is pinned to the first node and planned after every user pod, so it never shifts
the addresses users' pods get.
"""

from __future__ import annotations

from netns_lab.model import DNS_IMAGE, ClusterConfig, Container, ContainerPort, Pod, Service, ServicePort

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
