#!/usr/bin/env bash
# SQLite's classic sqllogictest corpus through pgwire, PostgreSQL 15 beside a 3-node QuorumDB,
# per file (issue 16; docs/compatibility.md). Records go round-robin over the three nodes.
#
#   apt-get install -y postgresql
#   cargo build --release -p quorumdb-server -p quorumdb-tests --bins
#   bash scripts/slt_corpus.sh [corpus-test-dir] [files or dirs relative to it...]
#
# The corpus is public (https://www.sqlite.org/sqllogictest, mirrored on GitHub as
# gregrahn/sqllogictest); it is not committed here. Without a directory argument the script
# uses $SLT_CORPUS, or clones the mirror into ~/.cache/sqllogictest.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}/release"
BIN="${QUORUMDB_BIN:-$TARGET/quorumdb}"
RUNNER="${SLT_RUNNER:-$TARGET/slt-corpus}"
CORPUS="${1:-${SLT_CORPUS:-$HOME/.cache/sqllogictest/test}}"
shift || true
FILES=("$@")
[ "${#FILES[@]}" -gt 0 ] || FILES=(select1.test select2.test select3.test select4.test select5.test evidence)
if [ ! -d "$CORPUS" ]; then
  git clone --depth 1 https://github.com/gregrahn/sqllogictest "$HOME/.cache/sqllogictest"
  CORPUS="$HOME/.cache/sqllogictest/test"
fi
PATHS=()
for f in "${FILES[@]}"; do PATHS+=("$CORPUS/$f"); done

WORK_PREFIX=slt-corpus
source scripts/peers.sh

pg_up 25433
echo "PostgreSQL:" >&2
"$RUNNER" --url "host=127.0.0.1 port=25433 user=postgres" --summary "$WORK/pg.txt" "${PATHS[@]}" >&2

# QuorumDB: 3 nodes on loopback, writing the newest format.
quorum_up 2630
echo "QuorumDB:" >&2
"$RUNNER" --misses --url "host=127.0.0.1 port=26401 user=postgres" --url "host=127.0.0.1 port=26402 user=postgres" \
  --url "host=127.0.0.1 port=26403 user=postgres" --summary "$WORK/q.txt" "${PATHS[@]}" >"$WORK/q-misses.txt"
grep -v '^  ' "$WORK/q-misses.txt" >&2
cp "$WORK/q-misses.txt" "${SLT_MISSES:-/tmp/slt-corpus-misses.txt}"

# One markdown table: per file, records run and passed on each.
python3 - "$WORK/pg.txt" "$WORK/q.txt" "$CORPUS" <<'PY'
import sys
def load(p):
    out = {}
    for line in open(p):
        path, passed, failed, errored, skipped = line.split()
        out[path] = (int(passed), int(passed) + int(failed) + int(errored))
    return out
pg, q, root = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3].rstrip('/') + '/'
print("| file | PostgreSQL 15 passed / run | QuorumDB passed / run | QuorumDB % |")
print("| --- | --- | --- | --- |")
tp = tq = rp = rq = 0
for path in sorted(q):
    (a, b), (c, d) = pg.get(path, (0, 0)), q[path]
    tp += a; rp += b; tq += c; rq += d
    print(f"| {path.replace(root, '')} | {a} / {b} | {c} / {d} | {100.0 * c / d if d else 100:.1f} |")
print(f"| **total** | {tp} / {rp} | {tq} / {rq} | {100.0 * tq / rq if rq else 100:.1f} |")
PY
