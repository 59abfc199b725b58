#!/usr/bin/env bash
# The cost of TLS: the same 3-node QuorumDB cluster on loopback (release build, every write
# fsynced on a quorum), once in plaintext and once with certificates from `quorumdb cert`
# (TLS on every port and mutual TLS between nodes), one after the other on the same machine:
#   - KV writes, wrk over HTTP keep-alive to the leader, 256-byte values over 1,000 keys,
#     1 and 64 connections (http:// vs https://);
#   - pgwire point SELECT by primary key, pgbench -M prepared, 1 and 8 clients
#     (sslmode=disable vs sslmode=require), linearizable.
#
#   apt-get install -y wrk postgresql
#   cargo build --release --workspace --bins
#   bash scripts/tls_bench.sh [seconds]
set -euo pipefail
SECONDS_EACH="${1:-10}"
ROWS=10000
BIN="${QUORUMDB_BIN:-${CARGO_TARGET_DIR:-target}/release/quorumdb}"
WORK="$(mktemp -d /tmp/tls-bench.XXXXXX)"
PIDS=()
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" cert init --dir "$WORK/certs" >/dev/null
for i in 1 2 3; do "$BIN" cert node --dir "$WORK/certs" --id "$i" --host 127.0.0.1 >/dev/null; done

cat >"$WORK/put.lua" <<'EOF'
local v = string.rep('v', 256)
local n = 0
request = function()
  n = n + 1
  return wrk.format('PUT', '/v1/kv/key' .. (n % 1000), nil, v)
end
EOF
cat >"$WORK/select.sql" <<EOF
\set id random(1, $ROWS)
SELECT v FROM bench WHERE id = :id;
EOF

# start MODE BASE: a 3-node cluster, main ports BASE+1..3, pgwire BASE+11..13.
start() {
  local mode=$1 base=$2 scheme=http tls=()
  if [ "$mode" = tls ]; then scheme=https; fi
  for i in 1 2 3; do
    tls=()
    if [ "$mode" = tls ]; then
      tls=(--tls-cert "$WORK/certs/node-$i.crt" --tls-key "$WORK/certs/node-$i.key" --tls-ca "$WORK/certs/ca.crt")
    fi
    local role=(--join "127.0.0.1:$((base + 1))")
    if [ "$i" = 1 ]; then role=(--init); fi
    "$BIN" start --id "$i" --data-dir "$WORK/$mode$i" --listen "127.0.0.1:$((base + i))" \
      --pg-listen "127.0.0.1:$((base + 10 + i))" --redis-listen off "${role[@]}" "${tls[@]}" \
      >"$WORK/$mode$i.log" 2>&1 &
    PIDS+=($!)
    if [ "$i" = 1 ]; then sleep 2; fi
  done
  local curl=(curl -sf --cacert "$WORK/certs/ca.crt")
  for _ in $(seq 1 100); do
    if "${curl[@]}" "$scheme://127.0.0.1:$((base + 1))/v1/status" | grep -q '"members":\[[^]]*,[^]]*,[^]]*\]'; then break; fi
    sleep 0.2
  done
  "${curl[@]}" "$scheme://127.0.0.1:$((base + 1))/v1/sql" -d "{\"sql\": \"CREATE TABLE bench (id INT PRIMARY KEY, n BIGINT NOT NULL, v TEXT NOT NULL)\"}" >/dev/null
  for start_id in $(seq 1 1000 $ROWS); do
    "${curl[@]}" "$scheme://127.0.0.1:$((base + 1))/v1/sql" \
      -d "{\"sql\": \"INSERT INTO bench SELECT g, 0, repeat('x', 100) FROM generate_series($start_id, $((start_id + 999))) AS s(g)\"}" >/dev/null
  done
}

# CPU seconds the three nodes have used so far.
nodes_cpu() {
  local ticks=0 p
  for p in "${PIDS[@]}"; do ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$ticks $(getconf CLK_TCK)" | awk '{print $1 / $2}'
}

wrk_line() { # label url conns
  local out rps p50 p99 writes before after TIMEFORMAT='wrkcpu %U %S'
  before=$(nodes_cpu)
  out=$( { time wrk -t "$([ "$3" = 1 ] && echo 1 || echo 2)" -c "$3" -d "${SECONDS_EACH}s" --latency -s "$WORK/put.lua" "$2"; } 2>&1)
  after=$(nodes_cpu)
  rps=$(echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  writes=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  # CPU per write: the three nodes together, and the load generator (its TLS included).
  cpu=$(echo "$out" | awk -v b="$before" -v a="$after" -v n="$writes" \
    '$1 == "wrkcpu" {printf "%.0f | %.0f", (a - b) * 1e6 / n, ($2 + $3) * 1e6 / n}')
  printf '| %s | KV write | %s | %s | %s | %s | %s |\n' "$1" "$3" "$rps" "$p50" "$p99" "$cpu"
}

pg_line() { # label port sslmode clients
  local out tps lat
  out=$(PGSSLMODE=$3 pgbench -n -M prepared -h 127.0.0.1 -p "$2" -U bench -c "$4" -j "$4" -T "$SECONDS_EACH" -f "$WORK/select.sql" quorumdb 2>&1)
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
  printf '| %s | pgwire point SELECT | %s | %s | avg %s ms | | | |\n' "$1" "$4" "$tps" "$lat"
}

echo "| mode | workload | clients | /s | p50 | p99 | nodes' CPU µs/write | client's CPU µs/write |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
start plain 19400
for c in 1 64; do wrk_line plaintext "http://127.0.0.1:19401" "$c"; done
for c in 1 8; do pg_line plaintext 19411 disable "$c"; done
kill "${PIDS[@]}"; wait 2>/dev/null || true; PIDS=()
start tls 19500
for c in 1 64; do wrk_line TLS "https://127.0.0.1:19501" "$c"; done
for c in 1 8; do pg_line TLS 19511 require "$c"; done
