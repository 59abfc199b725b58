#!/usr/bin/env bash
# redis-benchmark against QuorumDB's RESP surface: a 1-node and a 3-node cluster of the
# quorumdb binary (debug unless QUORUMDB_BIN says otherwise) in a temp dir, and a local
# redis-server for reference if one is installed. Prints redis-benchmark's summary lines.
#
#   bash scripts/resp_bench.sh            # N=20000 requests, C=50 clients
#   N=50000 C=100 bash scripts/resp_bench.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${QUORUMDB_BIN:-${CARGO_TARGET_DIR:-target}/debug/quorumdb}"
N="${N:-20000}"
C="${C:-50}"
[ -x "$BIN" ] || { echo "build the binary first: cargo build -p quorumdb-server ($BIN)" >&2; exit 1; }
command -v redis-benchmark >/dev/null || { echo "redis-benchmark missing: bash scripts/setup.sh" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

bench() { # port, label
  for p in "" "-P 16"; do
    echo "== $2, -c $C -n $N ${p:-(no pipelining)}"
    # shellcheck disable=SC2086
    redis-benchmark -h 127.0.0.1 -p "$1" -t set,get -n "$N" -c "$C" $p -q | tr '\r' '\n' | grep 'per second'
  done
}

wait_redis() { # port
  for _ in $(seq 100); do
    redis-cli -p "$1" SET bench:ready 1 2>/dev/null | grep -q OK && return 0
    sleep 0.2
  done
  echo "node on port $1 did not answer" >&2
  exit 1
}

start_cluster() { # nodes, base port
  local n=$1 base=$2
  for id in $(seq "$n"); do
    local args=(start --id "$id" --data-dir "$work/c$n-n$id" --listen "127.0.0.1:$((base + id))"
      --redis-listen "127.0.0.1:$((base + 100 + id))" --pg-listen off)
    if [ "$id" = 1 ]; then args+=(--init); else args+=(--join "127.0.0.1:$((base + 1))"); fi
    "$BIN" "${args[@]}" >"$work/c$n-n$id.log" 2>&1 &
    pids+=($!)
    [ "$id" = 1 ] && wait_redis $((base + 101))
  done
  # Every node answers a linearizable write-then-read once it is a member.
  for id in $(seq "$n"); do wait_redis $((base + 100 + id)); done
}

start_cluster 1 17400
bench 17501 "QuorumDB 1 node (leader)"
start_cluster 3 17600
bench 17701 "QuorumDB 3 nodes, leader"
bench 17702 "QuorumDB 3 nodes, follower"

if command -v redis-server >/dev/null; then
  redis-server --port 17999 --dir "$work" --save '' --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
  pids+=($!)
  wait_redis 17999
  bench 17999 "redis-server $(redis-server --version | grep -o 'v=[0-9.]*') (no persistence)"
  redis-cli -p 17999 CONFIG SET appendonly yes >/dev/null
  redis-cli -p 17999 CONFIG SET appendfsync always >/dev/null
  sleep 1
  bench 17999 "redis-server, appendonly yes, appendfsync always"
fi
