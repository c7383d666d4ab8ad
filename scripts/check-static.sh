#!/usr/bin/env bash
# Build berth as one static binary (glibc, crt-static) the way the Dockerfile does,
# prove it is static, and smoke-test it: --version, a server on a free port with a
# temp data dir, /healthz with curl, and the CLI signing in through the host name
# `localhost` (a getaddrinfo lookup, the part of glibc that static linking can break).
# As root, the smoke test runs again in an empty chroot, as in the scratch image.
#
# Usage: scripts/check-static.sh
#
# Environment:
#   BERTH_STATIC_BIN  check this binary instead of building one
#
# Prints the binary's size; exits non-zero on any failed check.
set -euo pipefail

SCRIPT=check-static
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in curl file ldd; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (apt-get install -y curl file libc-bin)."
done

# --- 1. build --------------------------------------------------------------
if [[ -n ${BERTH_STATIC_BIN:-} ]]; then
    BIN=$BERTH_STATIC_BIN
    [[ -x $BIN ]] || die "BERTH_STATIC_BIN=$BIN is not an executable file."
else
    build_static
    BIN=$STATIC_BIN
fi

# --- 2. static? ------------------------------------------------------------
kind=$(file -b "$BIN")
say "file: $kind"
case $kind in
*"statically linked"* | *"static-pie linked"*) ;;
*) die "file does not call $BIN statically linked: $kind" ;;
esac
libs=$(ldd "$BIN" 2>&1 || true)
say "ldd: $libs"
case $libs in
*"not a dynamic executable"* | *"statically linked"*) ;;
*) die "ldd lists shared libraries for $BIN: $libs" ;;
esac
if grep -q "=>" <<<"$libs"; then die "ldd lists shared libraries: $libs"; fi

# --- 3. it runs ------------------------------------------------------------
version=$("$BIN" --version) || die "$BIN --version failed."
say "version: $version"

workdir berth-static
show_output() { cat "$WORK"/*.out "$WORK"/*.err >&2 2>/dev/null; }
ON_FAILURE=show_output

# No inherited BERTH_* settings.
while IFS='=' read -r name _; do
    if [[ $name == BERTH_* ]]; then unset "$name"; fi
done < <(env)

# smoke LABEL [ROOT]: server on a free port, /healthz, then the CLI signs in through
# the host name `localhost`; with ROOT, everything runs chrooted there.
smoke() {
    local label=$1 root=${2:-} run=() bin=$BIN data=$WORK/$1-data config=$WORK/$1-config.json
    if [[ -n $root ]]; then
        run=(chroot "$root")
        bin=/berth
        data=/data
        config=/data/config.json
    fi
    export BERTH_CONFIG=$config
    "${run[@]}" "$bin" server --listen 127.0.0.1:0 --data "$data" \
        >"$WORK/$label.out" 2>"$WORK/$label.err" &
    SERVER_PID=$!
    track "$SERVER_PID"
    local addr
    addr=$(await_line "$WORK/$label.out" "$LISTENING" "$SERVER_PID")
    [[ -n $addr ]] || die "$label: the server did not report its address."
    local health
    health=$(curl -sS --max-time 10 "http://$addr/healthz") || die "$label: GET /healthz failed."
    [[ $health == ok ]] || die "$label: GET /healthz answered '$health', not 'ok'."
    local password
    password=static-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    printf '%s\n' "$password" |
        "${run[@]}" "$bin" admin create-user smoke --crew smoke --role owner --password-stdin \
            --data "$data" >/dev/null || die "$label: berth admin create-user failed."
    printf '%s\n' "$password" |
        "${run[@]}" "$bin" --server "http://localhost:${addr##*:}" login --username smoke \
            --password-stdin >/dev/null ||
        die "$label: berth login through http://localhost:${addr##*:} failed (name resolution?)."
    local who
    who=$("${run[@]}" "$bin" whoami --json) || die "$label: berth whoami failed."
    grep -q '"smoke"' <<<"$who" || die "$label: berth whoami did not name the user: $who"
    kill -TERM "$SERVER_PID"
    local status=0
    wait "$SERVER_PID" || status=$?
    PIDS=() # the one tracked process, the server, is gone
    [[ $status -eq 0 ]] || die "$label: the server exited $status on SIGTERM, not 0."
    say "$label: server, /healthz, login and whoami through localhost, clean SIGTERM stop"
}

smoke host

# As in the scratch image, only stricter: no /dev, /proc or /etc but a hosts file.
if [[ $(id -u) -eq 0 ]] && command -v chroot >/dev/null 2>&1; then
    ROOTFS=$WORK/rootfs
    mkdir -p "$ROOTFS/etc" "$ROOTFS/data" "$ROOTFS/tmp"
    cp "$BIN" "$ROOTFS/berth"
    printf '127.0.0.1 localhost\n' >"$ROOTFS/etc/hosts"
    smoke scratch "$ROOTFS"
else
    say "not root: skipped the empty-chroot run (the scratch image's conditions)"
fi

size=$(stat -c %s "$BIN")
say "static binary OK: $BIN, $size bytes ($((size / 1024 / 1024)) MiB)"
