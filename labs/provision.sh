#!/usr/bin/env bash
# Install everything netns-lab needs on a fresh Debian or Ubuntu machine, as root:
# kernel-side tools (iproute2, iptables, nftables, conntrack, ping, tcpdump), a Python >= 3.11
# virtualenv in .venv, and the package itself (editable) with its test dependencies.
# Idempotent: CI, the README and the Vagrant box all run exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt_packages=(iproute2 iptables nftables conntrack iputils-ping tcpdump graphviz ipset ipvsadm ca-certificates openssl curl python3 python3-venv
              # the ingress controllers the lab runs inside pod namespaces (never as system services):
              # nginx with its Lua module (ingress-nginx's dynamic backends) and cjson; HAProxy
              nginx-light libnginx-mod-http-lua lua-cjson haproxy
              # the BGP daemon of the `bgp` network and load balancer, one per node and router namespace
              bird2
              # the stock-kernel VM for what this kernel may lack (IP_VS, dummy): `invoke test-vm`
              qemu-system-x86 linux-image-amd64 busybox-static)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    # Packages with a daemon (nginx) must not start one on the host: the lab starts its own
    # nginx inside a lab namespace. policy-rc.d says so to invoke-rc.d/deb-systemd-invoke.
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        for daemon in nginx haproxy bird; do  # installed for the lab only
            if [[ " ${missing[*]} " == *" $daemon "* || " ${missing[*]} " == *" $daemon-light "* || " ${missing[*]} " == *" ${daemon}2 "* ]]; then
                systemctl disable --now "$daemon" 2>/dev/null || true
            fi
        done
    fi
fi

# The ingress controller's nginx runs as its own unprivileged system user (no home, no shell),
# as ingress-nginx runs as its own uid: nothing else on the machine shares its files.
if ! getent passwd netns-lab >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin netns-lab
fi

pick_python() {
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null && "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$py"; return 0
        fi
    done
    return 1
}
if ! PY=$(pick_python); then  # e.g. Ubuntu 22.04 ships 3.10
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv >/dev/null
    PY=$(pick_python)
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    rm -rf .venv
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench,vm]'
echo "netns-lab ready: $(.venv/bin/python --version), $(ip -V)"
