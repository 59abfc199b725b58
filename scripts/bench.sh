#!/usr/bin/env bash
# Release-build benchmarks behind docs/benchmarks.md: SQL in-process, SQL over HTTP on a 1-node
# and a 3-node cluster, and replicated KV writes. Usage: bash scripts/bench.sh [rows]
source "$(dirname "$0")/setup.sh"
ROWS="${1:-1000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -p quorumdb-server -p quorumdb-examples
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d /tmp/quorumdb-bench.XXXXXX)"
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

start() { # id port [--init | --join addr]
  "$BIN/quorumdb" start --id "$1" --data-dir "$WORK/n$1-$2" --listen "127.0.0.1:$2" "${@:3}" >"$WORK/node$1-$2.log" 2>&1 &
  PIDS+=($!)
}
wait_members() { # port count
  for _ in $(seq 1 150); do
    n=$(curl -s "http://127.0.0.1:$1/v1/status" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["members"]))' 2>/dev/null || echo 0)
    [ "$n" = "$2" ] && return 0
    sleep 0.2
  done
  echo "cluster on port $1 did not reach $2 members" >&2; exit 1
}

echo "== SQL in-process (no network, no Raft)"
"$BIN/sql_bench" local --rows 100000 --queries 20000

echo "== SQL over HTTP, 1 node"
start 1 17501 --init; wait_members 17501 1
"$BIN/sql_bench" http --target 127.0.0.1:17501 --rows "$ROWS" --clients 4 --seconds 5

echo "== SQL over HTTP, 3 nodes (through the leader)"
start 1 17601 --init; wait_members 17601 1
start 2 17602 --join 127.0.0.1:17601; start 3 17603 --join 127.0.0.1:17601; wait_members 17601 3
"$BIN/sql_bench" http --target 127.0.0.1:17601 --rows $((ROWS / 5)) --clients 16 --seconds 5

echo "== KV writes, 3 nodes"
"$BIN/kv_bench" --target 127.0.0.1:17601 --clients 1 --seconds 10
"$BIN/kv_bench" --target 127.0.0.1:17601 --clients 64 --seconds 10
