#!/usr/bin/env bash
# Runs every test, fast layers first:
#   1. unit tests, golden bytes, openraft's storage suite, the planner and the SQL logic tests
#      on the in-memory engine: each test binary runs its tests in parallel;
#   2. cluster tests (in-process and multi-process clusters, the SQL logic tests on 1 and 3
#      nodes): one test at a time, since elections are timing-sensitive on 2 cores.
# Arguments go to every test binary (a name filter, say: `bash scripts/test.sh snapshot`).
source "$(dirname "$0")/setup.sh"
export QUORUMDB_TEST_LIST="${TMPDIR:-/tmp}/quorumdb-tests.$$.json"
trap 'rm -f "$QUORUMDB_TEST_LIST"' EXIT
started=$(date +%s)
# One build of every test target (one feature set: no per-package rebuilds).
cargo test --workspace --no-run --message-format=json-render-diagnostics >"$QUORUMDB_TEST_LIST"
cargo test --workspace --doc -q "$@"
python3 - "$@" <<'PY'
"""Runs the test binaries cargo just built: the cluster crate's one test at a time, the rest
in parallel within each binary. Exits non-zero if any binary fails; names the failed ones."""
import json, os, subprocess, sys, time

CLUSTER_PACKAGE = "quorumdb-tests"
args = sys.argv[1:]
binaries = []
for line in open(os.environ["QUORUMDB_TEST_LIST"]):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable") or not msg["profile"]["test"]:
        continue
    package = msg["package_id"]
    cluster = f"/{CLUSTER_PACKAGE}#" in package or f"{CLUSTER_PACKAGE}@" in package or package.startswith(CLUSTER_PACKAGE + " ")
    name = f'{msg["target"]["name"]} ({msg["target"]["kind"][0]})'
    binaries.append((cluster, name, msg["executable"], os.path.dirname(msg["manifest_path"])))
binaries.sort(key=lambda b: b[0])  # fast layer first
failed = []
for cluster, name, exe, cwd in binaries:
    extra = ["--test-threads=1"] if cluster else []
    t = time.time()
    print(f"\n=== {'cluster' if cluster else 'fast'}: {name}", flush=True)
    rc = subprocess.call([exe, *args, *extra], cwd=cwd)
    print(f"=== {name}: {'ok' if rc == 0 else 'FAILED'} in {time.time() - t:.1f} s", flush=True)
    if rc != 0:
        failed.append(name)
if failed:
    print("\nfailed test binaries: " + ", ".join(failed))
    sys.exit(1)
PY
echo "all tests passed in $(( $(date +%s) - started )) s"
