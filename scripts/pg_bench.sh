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
WORK_PREFIX=pg-bench
source "$(dirname "$0")/peers.sh"

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
pg_up 25432 -c fsync=on -c synchronous_commit=on
psql -h 127.0.0.1 -p 25432 -U postgres -q -c "$SETUP" postgres
run "PostgreSQL" 127.0.0.1 25432
pg_down

# QuorumDB: 3 nodes on loopback.
quorum_up 2610
psql -h 127.0.0.1 -p 26201 -U postgres -q -c "CREATE TABLE bench (id INT PRIMARY KEY, n BIGINT NOT NULL, v TEXT NOT NULL)" postgres
psql -h 127.0.0.1 -p 26201 -U postgres -q -c "INSERT INTO bench SELECT g, 0, repeat('x', 100) FROM generate_series(1, $ROWS) AS s(g)" postgres
run "QuorumDB leader" 127.0.0.1 26201
run "QuorumDB follower" 127.0.0.1 26202
PGOPTIONS='-c consistency=lease' run "QuorumDB leader, lease" 127.0.0.1 26201 select
PGOPTIONS='-c consistency=lease' run "QuorumDB follower, lease" 127.0.0.1 26202 select
