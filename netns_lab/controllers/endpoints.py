"""The endpoints controller: which pods back which Service port, as EndpointSlices say.

A pod is an endpoint of a Service when it is in the Service's namespace and matches its
selector; ``targetPort`` is resolved per pod (a named port may be a different number on each
pod, and a pod without that name is not an endpoint of that port). Its conditions are the
EndpointSlice controller's: ``ready`` = the pod is ready and not terminating, ``serving`` =
the pod is ready, ``terminating`` = it is being deleted (kube-proxy falls back to serving
terminating endpoints when a Service has no ready one left). A Service with
``publishNotReadyAddresses`` has every selected pod as a ready endpoint, as the controller
publishes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from netns_lab.controllers.topology import Topology, address_of
from netns_lab.model import Pod, Service, ServicePort


@dataclass(frozen=True)
class Endpoint:
    pod: str  # pod key
    ip: str
    port: int
    node: str
    ready: bool = True
    serving: bool = True
    terminating: bool = False


def _target(pod: Pod, sp: ServicePort) -> int | None:
    target = sp.target
    return target if isinstance(target, int) else pod.named_port(target, sp.protocol)


def is_ready(svc: Service, pod: Pod) -> bool:
    """The EndpointSlice controller's ``ready``: the pod is ready and not terminating, or the
    Service publishes not-ready addresses."""
    return svc.publish_not_ready_addresses or (pod.ready and not pod.terminating)


def selects(svc: Service, pod: Pod) -> bool:
    if svc.selector is None or pod.namespace != svc.namespace:
        return False
    labels = pod.label_map
    return all(labels.get(k) == v for k, v in svc.selector)


def endpoints(svc: Service, pods: tuple[Pod, ...], topo: Topology,
              conditions: bool = False, family: int = 4) -> dict[ServicePort, tuple[Endpoint, ...]]:
    """Ready endpoints per Service port, in pod order (stable, so rule diffs stay small);
    ``conditions``: every selected pod, with its conditions, as an EndpointSlice lists them.
    ``family`` 6: the pods' IPv6 addresses (a dual-stack Service's IPv6 EndpointSlice)."""
    out: dict[ServicePort, list[Endpoint]] = {sp: [] for sp in svc.ports}
    for pod in pods:
        ready = is_ready(svc, pod)
        if not (ready or conditions) or not selects(svc, pod):
            continue
        plan = topo.pod(pod.key)
        ip = address_of(plan, family)
        if ip is None:
            continue  # an IPv4 lab has no IPv6 endpoints
        for sp in svc.ports:
            port = _target(pod, sp)
            if port is not None:
                out[sp].append(Endpoint(pod.key, str(ip), port, plan.node, ready, pod.ready, pod.terminating))
    return {sp: tuple(eps) for sp, eps in out.items()}
