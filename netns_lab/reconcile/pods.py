"""Pod sandboxes (what the CNI plugin and kubelet make): a pod's network namespace, its veth
to the node's bridge, its address and routes, and its resolv.conf.

New pods are made first in a sync (before any rule or server points at them); pods that are
gone are removed last (``prune``, after the rules stopped sending them traffic and netexec
closed their sockets). Ownership comes first, as in ``up``: a pod's namespace and directory
are in the lab's record before they exist, so a sync killed half way leaves nothing that
``clean`` does not find.
"""

from __future__ import annotations

import shutil

from netns_lab.controllers.topology import PodPlan, Topology
from netns_lab.model import Pod
from netns_lab.realize import netns as nsmod
from netns_lab.realize import network, resolvconf
from netns_lab.reconcile import Runtime, View


class PodSandboxes:
    name = "pods"

    def __init__(self, rt: Runtime, topo: Topology) -> None:
        self.rt = rt
        self.made: dict[str, PodPlan] = {p.key: p for p in topo.local_pods}  # realised (``up`` makes these)

    def sync(self, view: View) -> list[str]:
        topo = view.topology
        if view.full:  # after a failure: every sandbox that is missing or half made (no address yet)
            new = tuple(p for p in topo.local_pods
                        if not nsmod.exists(p.netns) or str(p.ip) not in nsmod.addresses(p.netns, p.ip.version))
        else:
            new = tuple(p for p in topo.local_pods if p.key not in self.made)
        if not new:
            return []
        for p in new:  # the remains of an attempt that failed half way: made again from nothing
            if nsmod.exists(p.netns):
                nsmod.delete(p.netns)
        network.remove_host_veths(topo, new)
        st = self.rt.state
        assert st is not None
        for p in new:  # the record first
            if p.netns not in st.namespaces:
                st.namespaces.append(p.netns)
            if resolvconf.config_dir(p.netns) not in st.dirs:
                st.dirs.append(resolvconf.config_dir(p.netns))
        st.save()
        network.add_pods(topo, new)
        by_key = {p.key: p for p in view.objects.pods}
        write_resolv_confs(tuple(by_key[p.key] for p in new), topo)
        self.made.update({p.key: p for p in new})
        return [f"Pod {p.key}: sandbox on {p.node}, IP {p.ip} (veth {p.host_veth})" for p in new]

    def prune(self, view: View) -> list[str]:
        wanted = {p.key for p in view.topology.local_pods}
        gone = [p for k, p in self.made.items() if k not in wanted]
        st = self.rt.state
        assert st is not None
        for p in gone:
            if nsmod.exists(p.netns):
                nsmod.delete(p.netns)
            network.forget_pod(view.topology, p)
            shutil.rmtree(resolvconf.config_dir(p.netns), ignore_errors=True)
            del self.made[p.key]
            st.namespaces = [n for n in st.namespaces if n != p.netns]
            st.dirs = [d for d in st.dirs if d != resolvconf.config_dir(p.netns)]
        network.remove_host_veths(view.topology, tuple(gone))  # now, not when the kernel gets to it (after the record)
        events = [f"Pod {p.key}: sandbox removed (namespace {p.netns}, veth {p.host_veth})" for p in gone]
        if view.full:  # after a failure: what the record still lists for pods that are no more
            keep = set(view.topology.namespaces)
            for ns in [n for n in st.namespaces if n not in keep]:
                if nsmod.exists(ns):
                    nsmod.delete(ns)
                st.namespaces.remove(ns)
                events.append(f"namespace {ns}: removed (left by an unfinished change)")
            dirs = {resolvconf.config_dir(n) for n in keep}
            for d in [d for d in st.dirs if d not in dirs]:
                shutil.rmtree(d, ignore_errors=True)
                st.dirs.remove(d)
        if gone or events:
            st.save()
        return events


def write_resolv_confs(pods: tuple[Pod, ...], topo: Topology) -> None:
    """kubelet's resolv.conf and hosts file for each local pod (``/etc/netns/NETNS/``)."""
    local = {p.key: p.netns for p in topo.local_pods}
    ips = {p.key: str(p.ip) for p in topo.local_pods}
    resolvconf.write_all(tuple(p for p in pods if p.key in local), local, str(topo.dns_ip), topo.cluster_domain, ips)
