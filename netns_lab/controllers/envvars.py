"""Service environment variables, as kubelet computes them (pkg/kubelet/envvars).

A pod sees the Services of its namespace that existed when it started (never ones created
later), plus the ``kubernetes`` Service; ``enableServiceLinks: false`` leaves only the latter.
Headless and ExternalName Services have no variables.
"""

from __future__ import annotations

from netns_lab.model import Pod, Service, hostport


def _name(s: str) -> str:
    return s.upper().replace("-", "_")


def service_vars(svc: Service) -> list[tuple[str, str]]:
    """``FOO_SERVICE_HOST``, ``FOO_SERVICE_PORT[_NAME]``, ``FOO_PORT[_N_PROTO[_PROTO|_PORT|_ADDR]]``."""
    if svc.cluster_ip is None or svc.type == "ExternalName" or not svc.ports:
        return []
    name, ip = _name(svc.name), svc.cluster_ip
    first = svc.ports[0]
    out = [(f"{name}_SERVICE_HOST", ip), (f"{name}_SERVICE_PORT", str(first.port))]
    for p in svc.ports:
        if p.name:
            out.append((f"{name}_SERVICE_PORT_{_name(p.name)}", str(p.port)))
    # the link variables join address and port as kubelet's net.JoinHostPort: [IPv6]:port
    out.append((f"{name}_PORT", f"{first.protocol.lower()}://{hostport(ip, first.port)}"))
    for p in svc.ports:
        proto = p.protocol.lower()
        prefix = f"{name}_PORT_{p.port}_{p.protocol.upper()}"
        out += [
            (prefix, f"{proto}://{hostport(ip, p.port)}"),
            (f"{prefix}_PROTO", proto),
            (f"{prefix}_PORT", str(p.port)),
            (f"{prefix}_ADDR", ip),
        ]
    return out


def pod_env(pod: Pod, services_before: tuple[Service, ...]) -> tuple[tuple[str, str], ...]:
    """The variables for ``pod`` given the Services that existed when it was created."""
    chosen: dict[str, Service] = {}
    for svc in services_before:
        if svc.key == "default/kubernetes" or (pod.enable_service_links and svc.namespace == pod.namespace):
            chosen[svc.name if svc.namespace == pod.namespace else f"~{svc.name}"] = svc
    # kubelet: a Service of the pod's own namespace wins over the master service's name
    if "kubernetes" in chosen and "~kubernetes" in chosen:
        del chosen["~kubernetes"]
    env: dict[str, str] = {}
    for svc in chosen.values():
        env.update(service_vars(svc))
    return tuple(sorted(env.items()))
