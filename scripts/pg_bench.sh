#!/usr/bin/env bash
# pgwire point SELECT by primary key and single-row UPDATE, side by side: PostgreSQL 15 (fsync=on,
# synchronous_commit=on; Debian's package) vs a 3-node QuorumDB (through the leader and through
# a follower, linearizable; point SELECTs also at `lease`, set through PGOPTIONS), each driven
# by pgbench -M prepared with 1 and 8 clients.
#
#   apt-get install -y postgresql
#   cargo build --release -p quorumdb-server
#   bash scripts/pg_bench.sh [seconds]
set -euo pipefail
SECONDS_EACH="${1:-10}"
ROWS=10000
BIN="${QUORUMDB_BIN:-${CARGO_TARGET_DIR:-target}/release/quorumdb}"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
WORK="$(mktemp -d /tmp/pg-bench.XXXXXX)"
chmod 777 "$WORK"
PIDS=()
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -m immediate stop" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/select.sql" <<EOF
\set id random(1, $ROWS)
SELECT v FROM bench WHERE id = :id;
EOF
cat >"$WORK/update.sql" <<EOF
\set id random(1, $ROWS)
UPDATE bench SET n = n + 1 WHERE id = :id;
EOF
SETUP="CREATE TABLE bench (id INT PRIMARY KEY, n BIGINT NOT NULL, v TEXT NOT NULL);
INSERT INTO bench SELECT g, 0, repeat('x', 100) FROM generate_series(1, $ROWS) AS s(g);"

run() { # label host port [scripts]
  for script in ${4:-select update}; do
    for c in 1 8; do
      out=$(pgbench -n -M prepared -h "$2" -p "$3" -U postgres -c "$c" -j "$c" -T "$SECONDS_EACH" -f "$WORK/$script.sql" postgres 2>&1) || {
        echo "$1 $script c=$c: pgbench failed: $out" | tail -3; continue; }
      tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
      lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
      printf '| %s | %s | %s | %s | %s |\n' "$1" "$script" "$c" "$tps" "$lat"
    done
  done
}

echo "| system | statement | clients | tps | avg latency ms |"
echo "| --- | --- | --- | --- | --- |"

# PostgreSQL: one local server, durable commits.
su postgres -c "$PGBIN/initdb -D $WORK/pg -A trust -U postgres" >/dev/null
su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -l $WORK/pg.log -o '-p 25432 -k $WORK -c fsync=on -c synchronous_commit=on' start" >/dev/null
sleep 2
psql -h 127.0.0.1 -p 25432 -U postgres -q -c "$SETUP" postgres
run "PostgreSQL" 127.0.0.1 25432
su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -m fast stop" >/dev/null

# QuorumDB: 3 nodes on loopback.
start() { # id [--init | --join addr]
  "$BIN" start --id "$1" --data-dir "$WORK/q$1" --listen "127.0.0.1:2610$1" --pg-listen "127.0.0.1:2620$1" \
    --redis-listen off "${@:2}" >"$WORK/q$1.log" 2>&1 &
  PIDS+=($!)
}
members() { curl -s "http://127.0.0.1:26101/v1/status" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["members"]))' 2>/dev/null || echo 0; }
start 1 --init
for _ in $(seq 1 100); do [ "$(members)" = 1 ] && break; sleep 0.2; done
start 2 --join 127.0.0.1:26101
start 3 --join 127.0.0.1:26101
for _ in $(seq 1 150); do [ "$(members)" = 3 ] && break; sleep 0.2; done
psql -h 127.0.0.1 -p 26201 -U postgres -q -c "CREATE TABLE bench (id INT PRIMARY KEY, n BIGINT NOT NULL, v TEXT NOT NULL)" postgres
psql -h 127.0.0.1 -p 26201 -U postgres -q -c "INSERT INTO bench SELECT g, 0, repeat('x', 100) FROM generate_series(1, $ROWS) AS s(g)" postgres
run "QuorumDB leader" 127.0.0.1 26201
run "QuorumDB follower" 127.0.0.1 26202
PGOPTIONS='-c consistency=lease' run "QuorumDB leader, lease" 127.0.0.1 26201 select
PGOPTIONS='-c consistency=lease' run "QuorumDB follower, lease" 127.0.0.1 26202 select
