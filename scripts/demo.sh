#!/usr/bin/env bash
# Builds quorumdb and runs a local 3-node demo cluster with sample data (Ctrl-C stops it).
source "$(dirname "$0")/setup.sh"
cargo build -p quorumdb-server --bin quorumdb
exec "${CARGO_TARGET_DIR:-target}/debug/quorumdb" demo "$@"
