# Sourced by demo.sh and test.sh: installs what a fresh Debian machine lacks.
set -euo pipefail
# libclang-dev: RocksDB's bindgen. postgresql-client, redis-tools, python3-psycopg: the real
# clients the tests drive against our PostgreSQL and Redis protocol surfaces.
missing=()
for pkg in libclang-dev postgresql-client redis-tools python3-psycopg; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} ..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust from rustup first" >&2
  exit 1
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
