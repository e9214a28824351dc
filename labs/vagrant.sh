#!/usr/bin/env bash
# Provisioning of the Vagrant box (see the Vagrantfile): the README's setup, then what a
# dedicated lab VM wants on top: the lab's kernel modules loaded now and at every boot, and
# `invoke` / `netns-lab` on root's PATH so `sudo invoke run-scenario clusterip` works.
# NETNS_LAB_ROOT (tests only) writes the files under another root instead of /.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${NETNS_LAB_ROOT:-}"
bash labs/provision.sh
modules=(ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_sh dummy br_netfilter vxlan nf_conntrack)
mkdir -p "$root/etc/modules-load.d" "$root/usr/local/bin"
printf '%s\n' "${modules[@]}" > "$root/etc/modules-load.d/netns-lab.conf"
if [ -z "$root" ]; then  # a test run under another root leaves the running kernel alone
    for m in "${modules[@]}"; do
        modprobe "$m" 2>/dev/null || echo "module $m is not available in kernel $(uname -r)"
    done
fi
ln -sf "$PWD/.venv/bin/invoke" "$root/usr/local/bin/invoke"
ln -sf "$PWD/.venv/bin/netns-lab" "$root/usr/local/bin/netns-lab"
echo "netns-lab box ready: kernel $(uname -r), IP_VS $(test -e /proc/net/ip_vs && echo loaded || echo missing)"
