# Sourced by demo.sh and test.sh: installs what a fresh Debian machine lacks.
set -euo pipefail
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  echo "installing libclang-dev (RocksDB's bindgen needs it) ..." >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust from rustup first" >&2
  exit 1
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
