#!/usr/bin/env bash
# The benchmark harness: the rust-ms gateway beside nginx (grpc_pass) and haproxy
# (proto h2) over the same three echo nodes, on loopback, in one bounded run; then
# discovery propagation, failover under load, and a gateway started against 10,000
# instances. Proxies run pinned to core 0, everything else to core 1. Results go to
# bench/RESULTS.md, bench/results.json and bench/results.png. Not part of the tests:
# numbers depend on the machine.
#   scripts/bench.sh [bench flags: --calls N, --proxies-only, --instances N, ...]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench: need ${need[*]} (apt-get install ${need[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "bench: needs two cores (proxies on one, load and upstreams on the other)" >&2
  exit 1
fi

cargo build --release -p rust-ms-gateway -p rust-ms-bench --bins
exec taskset -c 1 target/release/bench "$@"
