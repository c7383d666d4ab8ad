#!/usr/bin/env bash
# The whole test suite. Installs what the tests drive when it is missing (Debian
# packages as root: chromium, curl, git, nginx, openssl; python's websockets;
# the dashboard test's npm packages), then runs cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

apt_need=()
for tool in curl git openssl chromium; do
  command -v "$tool" >/dev/null || apt_need+=("$tool")
done
command -v python3 >/dev/null || apt_need+=(python3 python3-pip)
# nginx lives in /usr/sbin, not on every user's PATH (tests/nginx.rs looks there too).
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_need+=(nginx)
if [ ${#apt_need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
    echo "The tests need: ${apt_need[*]}. Install them (apt-get install ${apt_need[*]}) and run again." >&2
    exit 1
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${apt_need[@]}"
fi

if ! python3 -c 'import websockets' 2>/dev/null; then
  python3 -m pip install -q websockets ||
    python3 -m pip install -q --break-system-packages websockets
fi

if [ -f tests/dashboard/package-lock.json ] && [ ! -d tests/dashboard/node_modules ]; then
  command -v npm >/dev/null || { echo "The dashboard tests need Node.js and npm; install them and run again." >&2; exit 1; }
  npm ci --prefix tests/dashboard --no-audit --no-fund
fi

cargo test "$@"
