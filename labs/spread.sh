#!/usr/bin/env bash
# Run one scenario spread over the VMs of `NETNS_LAB_VMS=N vagrant up` (see the Vagrantfile):
# the same `invoke run-scenario SCENARIO --spread IP,IP,...` on every VM at once. Each VM builds
# its share of the nodes, waits for the others, runs the checks whose source it holds, and
# waits for the others' checks before tearing down. Prints every VM's report; exits non-zero
# if any VM's run failed.
#
#   NETNS_LAB_VMS=3 labs/spread.sh clusterip [--set cluster.proxyMode=ipvs ...]
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
    echo "usage: NETNS_LAB_VMS=N $0 SCENARIO [run-scenario options]" >&2
    exit 2
fi
n="${NETNS_LAB_VMS:-2}"
if ! [ "$n" -ge 2 ] 2>/dev/null; then
    echo "NETNS_LAB_VMS must be 2 or more (the VMs of 'NETNS_LAB_VMS=$n vagrant up'), got '$n'" >&2
    exit 2
fi
subnet=192.168.56  # the Vagrantfile's SPREAD_SUBNET: lab1 is .11, lab2 .12, ...
hosts=$(seq -s, -f "$subnet.%g" 11 $((10 + n)))
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
args=$(printf ' %q' "$@")
pids=()
for i in $(seq 1 "$n"); do
    vagrant ssh "lab$i" -c "cd /vagrant && sudo invoke run-scenario$args --spread $hosts" >"$logs/lab$i" 2>&1 &
    pids+=($!)
done
status=0
for i in $(seq 1 "$n"); do
    wait "${pids[$((i - 1))]}"
    rc=$?
    echo "== lab$i (exit $rc)"
    cat "$logs/lab$i"
    [ "$rc" -eq 0 ] || status=1
done
exit "$status"
