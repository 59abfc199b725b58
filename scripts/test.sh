#!/usr/bin/env bash
# Runs every test: unit tests, openraft's storage suite, in-process and multi-process clusters.
source "$(dirname "$0")/setup.sh"
# Cluster tests are timing-sensitive (elections); one at a time keeps a 2-core machine calm.
cargo test --workspace "$@" -- --test-threads=1
