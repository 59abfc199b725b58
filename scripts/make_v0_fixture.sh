#!/usr/bin/env bash
# Writes tests/fixtures/v0-node/ (a one-node data directory) and tests/fixtures/v0-node.json
# (the answers that node gave) with a given quorumdb binary: the fixture of the format version
# that binary writes, for t06_old_format. The state is taken back to a point before the last
# batch of writes, so a node started on the fixture must replay the log's tail.
#
#   bash scripts/make_v0_fixture.sh /path/to/old/quorumdb [out-dir]
set -euo pipefail
bin=${1:?usage: make_v0_fixture.sh QUORUMDB_BINARY [OUT_DIR]}
out=${2:-$(dirname "$0")/../tests/fixtures}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
data=$work/node
start() {
  "$bin" start --id 1 --data-dir "$data" --listen "$addr" --pg-listen off --redis-listen off "$@" >>"$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://$addr/v1/status" | grep -q '"role":"leader"' && return; sleep 0.2; done
  echo "the node did not become leader" >&2; cat "$work/log" >&2; exit 1
}
sql() { curl -sf -X POST "http://$addr/v1/sql" -H 'content-type: application/json' -d "$(jq -n --arg s "$1" '{sql: $s}')"; }
put() { curl -sf -X PUT "http://$addr/v1/kv/$1" --data-binary "$2" >/dev/null; }

start --init
# Batch A: everything the state holds before the replayed tail.
for p in mercury venus earth mars; do put "planet/$p" "$p-v0"; done
put "counter" "41"
sql "CREATE TABLE people (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email VARCHAR(40) UNIQUE, score NUMERIC(8,2), born DATE, seen TIMESTAMP, active BOOLEAN DEFAULT true, photo BYTEA, tags JSON, ratio REAL, weight DOUBLE PRECISION)" >/dev/null
sql "INSERT INTO people VALUES (1, 'Ada', 'ada@x.org', 12.50, '1815-12-10', '2024-01-02 03:04:05.678', true, '\\x00ff', '{\"k\": [1, 2]}', 0.5, 61.25), (2, 'Alan', 'alan@x.org', -3.00, '1912-06-23', NULL, false, NULL, NULL, NULL, 70.0), (3, 'Grace', NULL, NULL, NULL, NULL, DEFAULT, NULL, '[]', 2.5, NULL)" >/dev/null
sql "CREATE INDEX people_name ON people (name)" >/dev/null
sql "UPDATE people SET score = score + 1 WHERE id = 1; DELETE FROM people WHERE id = 2" >/dev/null
sql "CREATE TABLE events (kind TEXT, n INT)" >/dev/null
sql "INSERT INTO events VALUES ('a', 1), ('b', 2), ('a', 3)" >/dev/null
curl -sf -X PUT "http://$addr/v1/collections/docs" -H 'content-type: application/json' -d '{"vectors": {"size": 4, "distance": "Euclid"}}' >/dev/null
points=$(python3 -c 'import json; print(json.dumps({"points": [{"id": i, "vector": [(i*7 % 10)/10, (i*3 % 10)/10, (i % 4)/4, 1.0], "payload": {"i": i, "even": i % 2 == 0}} for i in range(40)]}))')
curl -sf -X PUT "http://$addr/v1/collections/docs/points" -H 'content-type: application/json' -d "$points" >/dev/null
kill -TERM $pid; wait $pid || true
cp -a "$data" "$work/at-a"

# Batch B: the tail a new node replays from the log (DDL, DML, KV, vectors, a rejected write).
start
put "planet/mars" "mars-v1"
curl -sf -X DELETE "http://$addr/v1/kv/planet/venus" >/dev/null
sql "ALTER TABLE people ADD COLUMN nick TEXT DEFAULT 'none'" >/dev/null
sql "INSERT INTO people (id, name, email, nick) VALUES (4, 'Edsger', 'ed@x.org', 'ewd')" >/dev/null
sql "INSERT INTO people (id, name) VALUES (1, 'Duplicate')" >/dev/null || true
sql "UPDATE events SET n = n * 10 WHERE kind = 'a'" >/dev/null
sql "CREATE TABLE later (k TEXT PRIMARY KEY, v VECTOR(2))" >/dev/null
sql "INSERT INTO later VALUES ('x', '[1,2]'), ('y', '[3,4]')" >/dev/null
curl -sf -X PUT "http://$addr/v1/collections/docs/points" -H 'content-type: application/json' -d '{"points": [{"id": 100, "vector": [0.5, 0.5, 0.5, 0.5], "payload": {"i": 100, "even": true}}]}' >/dev/null
curl -sf -X POST "http://$addr/v1/collections/docs/points/delete" -H 'content-type: application/json' -d '{"points": [3, 5]}' >/dev/null

# The answers of the old binary, which a new one must reproduce after replaying.
q() { sql "$1" | jq -c '.results[-1] | {columns, rows}'; }
search=$(curl -sf -X POST "http://$addr/v1/collections/docs/search" -H 'content-type: application/json' -d '{"vector": [0.5, 0.5, 0.5, 0.5], "limit": 5, "params": {"exact": true}}' | jq -c '[.result[].id]')
status=$(curl -sf "http://$addr/v1/status")
jq -n \
  --argjson people "$(q 'SELECT * FROM people ORDER BY id')" \
  --argjson by_email "$(q "SELECT id, name FROM people WHERE email = 'ed@x.org'")" \
  --argjson by_name "$(q "SELECT id FROM people WHERE name = 'Grace'")" \
  --argjson events "$(q 'SELECT kind, sum(n) AS total FROM events GROUP BY kind ORDER BY kind')" \
  --argjson later "$(q 'SELECT k FROM later ORDER BY v <-> '"'"'[3,4]'"'"' LIMIT 1')" \
  --argjson count "$(q 'SELECT count(*) FROM docs')" \
  --argjson search "$search" \
  --argjson kv "$(curl -sf "http://$addr/v1/kv?prefix=planet/" | jq -c '[.items[] | [.key, .value]]')" \
  --arg counter "$(curl -sf "http://$addr/v1/kv/counter")" \
  --arg checksum "$(jq -r .checksum <<<"$status")" \
  --argjson applied "$(jq .applied <<<"$status")" \
  --arg binary_commit "${FIXTURE_COMMIT:-unknown}" \
  '{binary_commit: $binary_commit, applied: $applied, checksum: $checksum, people: $people, by_email: $by_email, by_name: $by_name, events: $events, later: $later, docs_count: $count, docs_search: $search, kv: $kv, counter: $counter}' \
  >"$work/expected.json"
kill -KILL $pid; wait $pid 2>/dev/null || true

# The state (and the graph dumps) go back to batch A; the log keeps batch B.
rm -rf "$data/state" "$data/vectors" "$data/snapshots" "$data/STATE"
cp -a "$work/at-a/state" "$work/at-a/vectors" "$work/at-a/snapshots" "$data/"
[ -f "$work/at-a/STATE" ] && cp "$work/at-a/STATE" "$data/"
# RocksDB's info logs are not data.
find "$data" -name 'LOG' -o -name 'LOG.old.*' | xargs rm -f
rm -rf "$out/v0-node"
cp -a "$data" "$out/v0-node"
cp "$work/expected.json" "$out/v0-node.json"
du -sh "$out/v0-node"
cat "$out/v0-node.json"
