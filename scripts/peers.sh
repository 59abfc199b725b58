# Sourced by the side-by-side scripts (pg_bench.sh, slt_corpus.sh): a work directory removed on
# exit, a local PostgreSQL, and a 3-node QuorumDB cluster on loopback, each stopped on exit.
# The caller sets BIN (the quorumdb binary) and may set PIDS+=(...) for its own processes.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
WORK="$(mktemp -d "/tmp/${WORK_PREFIX:-peers}.XXXXXX")"
chmod 777 "$WORK"
PIDS=()
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -m immediate stop" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# pg_up port [server options]: a fresh PostgreSQL on 127.0.0.1:port (user postgres, trust).
pg_up() {
  su postgres -c "$PGBIN/initdb -D $WORK/pg -A trust -U postgres" >/dev/null
  su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -l $WORK/pg.log -o '-p $1 -k $WORK ${*:2}' start" >/dev/null
  sleep 2
}
pg_down() { su postgres -c "$PGBIN/pg_ctl -D $WORK/pg -m fast stop" >/dev/null; }

# quorum_up prefix: nodes 1-3 with the main port on 127.0.0.1:${prefix}0N and pgwire on
# 127.0.0.1:$((prefix + 10))0N (prefix 2610: 26101-26103 and 26201-26203); returns when all
# three are members.
quorum_up() {
  local main="$1" pg=$(($1 + 10))
  start_node() { # id [--init | --join addr]
    "$BIN" start --id "$1" --data-dir "$WORK/q$1" --listen "127.0.0.1:$main$1" --pg-listen "127.0.0.1:$pg$1" \
      --redis-listen off "${@:2}" >"$WORK/q$1.log" 2>&1 &
    PIDS+=($!)
  }
  members() { curl -s "http://127.0.0.1:${main}1/v1/status" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["members"]))' 2>/dev/null || echo 0; }
  start_node 1 --init
  for _ in $(seq 1 100); do [ "$(members)" = 1 ] && break; sleep 0.2; done
  start_node 2 --join "127.0.0.1:${main}1"
  start_node 3 --join "127.0.0.1:${main}1"
  for _ in $(seq 1 150); do [ "$(members)" = 3 ] && break; sleep 0.2; done
  # Until the cluster writes the newest format (views and roles need it).
  for _ in $(seq 1 100); do
    curl -s "http://127.0.0.1:${main}1/v1/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(s["format"] != s["max_format"])' 2>/dev/null && break
    sleep 0.2
  done
}
