"""Pod resolver configuration and hosts file, as kubelet writes them, where ``ip netns exec``
finds them.

``ip netns exec NS`` bind-mounts each file of ``/etc/netns/NS/`` over the one of ``/etc/``, so
any real program run in the pod (getent, dig, curl, python) uses the cluster DNS with the
pod's search path, and kubelet's managed ``/etc/hosts`` (the pod's own names). The directories are listed in the lab's ownership record first and
removed by it, like everything else the lab creates.

resolv.conf is line- and word-based: a newline in a search domain or an option would add a
line of its own (``nameserver 8.8.8.8``: a pod resolving through the outside world). The
scenario loader refuses such values; :func:`resolv_conf` refuses them again (``ValueError``)
for a model that did not come through it.
"""

from __future__ import annotations

import ipaddress
import os

from netns_lab import atomic
from netns_lab.model import Pod

ETC_NETNS = "/etc/netns"


def _word(value: object, what: str, pod: Pod, empty: bool = False) -> str:
    """``value`` as one word of resolv.conf: printable, no whitespace (else ValueError)."""
    if not isinstance(value, str) or not (value or empty) or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"pod {pod.key}: {what} {value!r} is not one word; refusing to write it into resolv.conf")
    return value


def resolv_conf(pod: Pod, dns_ip: str, zone: str) -> str:
    """kubelet's resolv.conf for ``pod`` (pkg/kubelet/network/dns)."""
    cfg = pod.dns_config
    extra_ns = list(cfg.nameservers) if cfg else []
    extra_search = list(cfg.searches) if cfg else []
    options: dict[str, str | None] = {}
    lines = [f"# written by netns-lab for pod {_word(pod.key, 'pod', pod)} (dnsPolicy {_word(pod.dns_policy, 'dnsPolicy', pod)})"]
    if pod.dns_policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        nameservers = [dns_ip, *extra_ns]
        search = [f"{pod.namespace}.svc.{zone}", f"svc.{zone}", zone, *extra_search]
        options["ndots"] = "5"
    elif pod.dns_policy == "None":
        nameservers, search = extra_ns, extra_search
    else:  # Default: the node's resolver; lab nodes have no upstream DNS server
        nameservers, search = extra_ns, extra_search
        lines.append("# Default policy: the node's resolver, and lab nodes have none")
    for name, value in (cfg.options if cfg else ()):
        if ":" in _word(name, "option name", pod):
            raise ValueError(f"pod {pod.key}: option name {name!r} contains ':'; refusing to write it into resolv.conf")
        options[name] = None if value is None else _word(value, "option value", pod, empty=True)
    search = [_word(s, "search domain", pod) for s in search]
    nameservers = [str(ipaddress.ip_address(ns)) for ns in nameservers]  # ValueError for anything else
    if search:
        lines.append("search " + " ".join(dict.fromkeys(search)))
    lines += [f"nameserver {ns}" for ns in list(dict.fromkeys(nameservers))[:3]]
    if options:
        lines.append("options " + " ".join(k if v is None else f"{k}:{v}" for k, v in options.items()))
    return "\n".join(lines) + "\n"


HOSTS_HEADER = ("# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters")


def hosts_file(pod: Pod, ip: str, zone: str) -> str:
    """kubelet's managed /etc/hosts (managedHostsFileContent): localhost, then the pod's IP
    with its hostname, fully qualified first when it has a subdomain."""
    hostname = _word(pod.hostname or pod.name, "hostname", pod)[:63]
    ip = str(ipaddress.ip_address(ip))
    if pod.subdomain:
        fqdn = f"{hostname}.{_word(pod.subdomain, 'subdomain', pod)}.{_word(pod.namespace, 'namespace', pod)}.svc.{_word(zone, 'zone', pod)}"
        own = f"{ip}\t{fqdn}\t{hostname}"
    else:
        own = f"{ip}\t{hostname}"
    return "\n".join((*HOSTS_HEADER, own)) + "\n"


def config_dir(netns_name: str) -> str:
    return os.path.join(ETC_NETNS, netns_name)


def write(netns_name: str, content: str, name: str = "resolv.conf") -> None:
    d = config_dir(netns_name)
    os.makedirs(d, exist_ok=True)
    atomic.write(os.path.join(d, name), content)


def write_all(pods: tuple[Pod, ...], netns_of: dict[str, str], cluster_dns_ip: str, zone: str,
              ip_of: dict[str, str] | None = None) -> None:
    for pod in pods:
        write(netns_of[pod.key], resolv_conf(pod, cluster_dns_ip, zone))
        if ip_of is not None:
            write(netns_of[pod.key], hosts_file(pod, ip_of[pod.key], zone), "hosts")


__all__ = ["resolv_conf", "hosts_file", "write", "write_all", "config_dir"]
