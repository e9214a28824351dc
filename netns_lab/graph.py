"""Draw a lab: nodes, pods with IPs, bridges, the overlay, the node network, the router, the
external network and its clients, the cloud load balancer, and Services with their VIPs,
NodePorts, load-balancer IPs, externalIPs and endpoints (Graphviz DOT or Mermaid).

Pure: a plan and a model in, text out. Drawing from a scenario file needs no root and
builds nothing; ``dot`` (Graphviz) turns the DOT text into SVG or PNG.
"""

from __future__ import annotations

import subprocess

from netns_lab.controllers.endpoints import endpoints
from netns_lab.controllers.topology import Topology
from netns_lab.netpol_view import selector_text
from netns_lab.model import NetworkPolicy, Pod, Service
from netns_lab.views import service_ports_text


def _both(primary: object, secondary: object | None) -> str:
    """``10.0.0.2`` or, in a dual-stack lab, ``10.0.0.2, fd00:10::2``."""
    return f"{primary}" if secondary is None else f"{primary}, {secondary}"


def _id(text: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in text)


def dot(topo: Topology, pods: tuple[Pod, ...], services: tuple[Service, ...], policies: tuple[NetworkPolicy, ...] = ()) -> str:
    spread = f", spread over {len(topo.hosts)} machines (trunk VXLAN VNI 2, UDP 4789)" if topo.is_spread else ""
    lines = [
        f'digraph "{topo.lab}" {{',
        "  rankdir=LR; compound=true; fontname=Helvetica;",
        '  node [fontname=Helvetica, fontsize=10, shape=box, style="rounded,filled", fillcolor=white];',
        f'  label="lab {topo.lab}: {len(topo.nodes)} nodes, {topo.network}, pod MTU {topo.pod_mtu}{spread}"; labelloc=t;',
        f'  {_id("underlay")} [label="node network {_both(topo.node_cidr, topo.node_cidr6)}\\nbridge br0 ({topo.underlay_netns})", shape=cylinder, fillcolor="#e8eef7"];',
        f'  {_id("wan")} [label="external network {_both(topo.external_cidr, topo.external_cidr6)}\\nbridge br0 ({topo.wan_netns})", shape=cylinder, fillcolor="#f7efe8"];',
        f'  {_id("router")} [label="router\\n{_both(topo.router_ip, topo.router_ip6)} | {_both(topo.router_ext_ip, topo.router_ext_ip6)}", shape=diamond, fillcolor="#f7efe8"];',
        f'  {_id("router")} -> {_id("underlay")} [dir=both, arrowsize=0.6];',
        f'  {_id("router")} -> {_id("wan")} [dir=both, arrowsize=0.6];',
        f'  {_id("cloudlb")} [label="cloud load balancer\\n{_both(topo.lb_ip, topo.lb_ip6)}, pool {_both(topo.lb_pool, topo.lb_pool6)}'
        f'{" (idle: BGP announces the pool)" if topo.load_balancer == "bgp" else ""}", shape=invhouse, fillcolor="#f7efe8"];',
        f'  {_id("cloudlb")} -> {_id("underlay")} [dir=both, arrowsize=0.6];',
    ]
    for c in topo.clients:
        label = "external" if c.name == "external" else f"external/{c.name}"
        lines.append(f'  {_id("client/" + c.name)} [label="{label}\\n{_both(c.ip, c.ip6)}", shape=oval, fillcolor="#f7efe8"];')
        lines.append(f'  {_id("client/" + c.name)} -> {_id("wan")} [dir=both, arrowsize=0.6];')
    for node in topo.nodes:
        lines.append(f'  subgraph "cluster_{node.name}" {{')
        where = f"\\non {topo.hosts[node.host].name} ({topo.hosts[node.host].ip})" if topo.is_spread else ""
        gw6 = None if node.gateway6 is None or node.pod_subnet6 is None else f"{node.gateway6}/{node.pod_subnet6.prefixlen}"
        lines.append(f'    label="{node.name}  eth0 {_both(node.ip, node.ip6)}\\ncni0 {_both(f"{node.gateway}/{node.pod_subnet.prefixlen}", gw6)}{where}"; style="rounded,filled"; fillcolor="#f4f4f4";')
        anchor = _id(f"{node.name}/cni0")
        lines.append(f'    {anchor} [label="cni0 bridge\\n{_both(node.pod_subnet, node.pod_subnet6)}", shape=hexagon, fillcolor="#eef7e8"];')
        if topo.network == "vxlan":
            lines.append(f'    {_id(node.name + "/vx")} [label="flannel.1 VXLAN\\nVNI 1, {node.vtep_ip}/{node.vtep_ip.max_prefixlen}", shape=hexagon, fillcolor="#f7f3e8"];')
        for p in topo.pods_on(node.name):
            lines.append(f'    {_id(p.key)} [label="{p.key}\\n{_both(p.ip, p.ip6)}"];')
            lines.append(f"    {_id(p.key)} -> {anchor} [arrowhead=none];")
        lines.append("  }")
        lines.append(f'  {anchor} -> {_id("underlay")} [ltail="cluster_{node.name}", label="eth0 {node.ip}", fontsize=8, arrowhead=none];')
    lines += _bgp_sessions(topo)
    if topo.network == "vxlan":
        for i, a in enumerate(topo.nodes):
            for b in topo.nodes[i + 1 :]:
                lines.append(f'  {_id(a.name + "/vx")} -> {_id(b.name + "/vx")} [style=dashed, dir=both, color="#b08020", label="VXLAN", fontsize=8];')
    for svc in services:
        if svc.type == "ExternalName":
            lines.append(f'  {_id("svc/" + svc.key)} [label="Service {svc.key}\\nExternalName -> {svc.external_name}", shape=note, fillcolor="#fdf6d8"];')
            continue
        vip = ", ".join(svc.cluster_ips) or "None (headless)"
        outside = "".join(f"\\nLB {ip}" for ip in svc.load_balancer_ips) + "".join(f"\\nexternalIP {ip}" for ip in svc.external_ips)
        lines.append(f'  {_id("svc/" + svc.key)} [label="Service {svc.key} ({svc.type})\\n{vip}  {service_ports_text(svc)}{outside}", shape=component, fillcolor="#fdf6d8"];')
        if svc.load_balancer_ips:  # who sends the LB IP's traffic: the cloud LB, or the router's BGP routes
            origin, how = ("router", "BGP ") if topo.load_balancer == "bgp" else ("cloudlb", "")
            lines.append(f'  {_id(origin)} -> {_id("svc/" + svc.key)} [style=dotted, label="{how}{svc.load_balancer_ips[0]}", fontsize=8];')
        seen: set[str] = set()
        for eps in endpoints(svc, pods, topo).values():
            for ep in eps:
                if ep.pod not in seen:
                    seen.add(ep.pod)
                    lines.append(f'  {_id("svc/" + svc.key)} -> {_id(ep.pod)} [color="#8060a0", label=":{ep.port}", fontsize=8];')
    for pol in policies:  # which pods each NetworkPolicy selects (isolates), and for what
        types = ", ".join(pol.policy_types)
        lines.append(f'  {_id("netpol/" + pol.key)} [label="NetworkPolicy {pol.key}\\n{selector_text(pol.pod_selector)} ({types})", '
                     'shape=octagon, fillcolor="#f9e0e0"];')
        for p in pods:
            if p.namespace == pol.namespace and pol.pod_selector.matches(p.labels):
                lines.append(f'  {_id("netpol/" + pol.key)} -> {_id(p.key)} [color="#b03030", style=bold, label="selects", fontsize=8];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _bgp_sessions(topo: Topology) -> list[str]:
    """The BGP sessions (``cluster.network`` or ``cluster.external.loadBalancer`` bgp): each
    node's eBGP session with the router and, for the bgp network's mesh, the iBGP sessions."""
    if not topo.uses_bgp:
        return []
    what = " + ".join(w for w, on in (("pod subnet", topo.network == "bgp"), ("LB /32s", topo.load_balancer == "bgp")) if on)
    out = [f'  {_id(n.name + "/cni0")} -> {_id("router")} [ltail="cluster_{n.name}", style=dashed, color="#2060a0", '
           f'label="eBGP AS {topo.bgp_as} -> {topo.bgp_router_as}\\n{what}", fontsize=8];' for n in topo.nodes]
    if topo.network == "bgp" and topo.bgp_mesh:
        for i, a in enumerate(topo.nodes):
            for b in topo.nodes[i + 1:]:
                out.append(f'  {_id(a.name + "/cni0")} -> {_id(b.name + "/cni0")} [ltail="cluster_{a.name}", lhead="cluster_{b.name}", '
                           f'style=dashed, dir=both, color="#2060a0", label="iBGP mesh", fontsize=8];')
    return out


def mermaid(topo: Topology, pods: tuple[Pod, ...], services: tuple[Service, ...]) -> str:
    lines = ["flowchart LR", f'  underlay[("node network {_both(topo.node_cidr, topo.node_cidr6)}")]',
             f'  wan[("external network {_both(topo.external_cidr, topo.external_cidr6)}")]',
             f'  router{{"router {topo.router_ip}"}} --- underlay', "  router --- wan",
             f'  cloudlb[/"cloud load balancer {topo.lb_ip}"\\] --- underlay']
    for c in topo.clients:
        lines.append(f'  {_id("client/" + c.name)}(["{"external" if c.name == "external" else "external/" + c.name} {c.ip}"]) --- wan')
    for node in topo.nodes:
        lines.append(f'  subgraph {_id(node.name)}["{node.name} {_both(node.ip, node.ip6)}"]')
        lines.append(f'    {_id(node.name + "/cni0")}{{{{"cni0 {node.pod_subnet}"}}}}')
        for p in topo.pods_on(node.name):
            lines.append(f'    {_id(p.key)}["{p.key}<br/>{_both(p.ip, p.ip6)}"] --- {_id(node.name + "/cni0")}')
        lines.append("  end")
        lines.append(f"  {_id(node.name)} --- underlay")
    for svc in services:
        label = f"Service {svc.key}<br/>{', '.join(svc.cluster_ips) or ('ExternalName ' + str(svc.external_name) if svc.type == 'ExternalName' else 'None')}"
        label += "".join(f"<br/>LB {ip}" for ip in svc.load_balancer_ips) + "".join(f"<br/>externalIP {ip}" for ip in svc.external_ips)
        lines.append(f'  {_id("svc/" + svc.key)}[/"{label}"/]')
        for eps in endpoints(svc, pods, topo).values() if svc.type != "ExternalName" else ():
            for ep in eps:
                lines.append(f'  {_id("svc/" + svc.key)} -.-> {_id(ep.pod)}')
    return "\n".join(dict.fromkeys(lines)) + "\n"


def render(dot_text: str, fmt: str) -> bytes:
    """SVG or PNG through Graphviz's ``dot``."""
    try:
        proc = subprocess.run(["dot", f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=60)
    except FileNotFoundError:
        raise RuntimeError("Graphviz is not installed (apt-get install graphviz)") from None
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode(errors="replace").strip())
    return proc.stdout
