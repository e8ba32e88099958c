#!/usr/bin/env bash
# Measures the gateway's /api path on this machine: the release dev stack (gateway, three
# user and two order nodes in one process, in-memory registry) under wrk on loopback,
# for a bounded time. Prints requests per second, latency percentiles and the process's
# peak memory. Not part of the tests: numbers depend on the machine.
#   scripts/bench-gateway.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get install -y -qq wrk >/dev/null
  else
    echo "bench-gateway: wrk is missing (apt-get install wrk)" >&2
    exit 1
  fi
fi

cargo build --release --bin dev-stack -q
target/release/dev-stack >/tmp/rust-ms-bench-dev-stack.log 2>&1 &
stack=$!
trap 'kill $stack 2>/dev/null; wait $stack 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs localhost:8080/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs localhost:8080/healthz >/dev/null || { echo "bench-gateway: the dev stack did not come up" >&2; exit 1; }
curl -fs -X POST localhost:8080/api/user/Register -d '{"username":"bench","password":"bench-pass"}' >/dev/null

script=$(mktemp)
cat >"$script" <<'LUA'
wrk.method = "POST"
wrk.body = '{"username":"bench"}'
wrk.headers["Content-Type"] = "application/json"
LUA
echo "== POST /api/user/Exists, ${connections} connections, ${seconds}s"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$script" http://127.0.0.1:8080/api/user/Exists
echo "== POST /api/order/Create (order calls user through discovery), ${connections} connections, ${seconds}s"
cat >"$script" <<'LUA'
wrk.method = "POST"
wrk.body = '{"username":"bench","item":"book"}'
wrk.headers["Content-Type"] = "application/json"
LUA
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$script" http://127.0.0.1:8080/api/order/Create
rm -f "$script"
echo "== dev stack peak memory: $(grep VmHWM /proc/$stack/status | awk '{print $2, $3}')"
