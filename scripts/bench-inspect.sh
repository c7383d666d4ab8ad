#!/usr/bin/env bash
# Benchmark HTTP through a berth tunnel with the traffic inspector recording
# (default retention) and with recording off (--inspect-retention 0), with wrk
# as the public client and a small local service behind `berth share`. The
# local service is also measured directly, as the ceiling.
#
# Usage: scripts/bench-inspect.sh
#
# Environment:
#   BERTH_BIN   use this berth binary instead of building target/release/berth
#   WRK_ARGS    wrk load parameters (default: -t2 -c32 -d10s --latency)
#   WARMUP      seconds of warm-up before each measurement (default 2; 0 = none)
#
# It fails (non-zero) only when the benchmark cannot run or is invalid (a build,
# server or share failure, non-2xx responses under load, records not written).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WRK_ARGS=${WRK_ARGS:--t2 -c32 -d10s --latency}
WARMUP=${WARMUP:-2}
case " $WRK_ARGS " in
*" --latency "* | *" -L "*) ;;
*) WRK_ARGS="$WRK_ARGS --latency" ;;
esac

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench-inspect: %s\n' "$*" >&2
    exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required; $2"; }
need curl "install it (e.g. apt-get install -y curl)."
need python3 "install it (e.g. apt-get install -y python3); it runs the local service."
need wrk "install it first, e.g. \`sudo apt-get install -y wrk\` (Debian/Ubuntu) or \`brew install wrk\` (macOS)."

if [[ -n ${BERTH_BIN:-} ]]; then
    [[ -x $BERTH_BIN ]] || die "BERTH_BIN=$BERTH_BIN is not an executable file."
    BIN=$BERTH_BIN
    say "using BERTH_BIN=$BIN (not building)"
else
    need cargo "install Rust (https://rustup.rs) or set BERTH_BIN to a built berth."
    say "building the release binary (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet)
    BIN=$ROOT/target/release/berth
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-inspect.XXXXXX")
PIDS=()
stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do stop "$pid"; done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the local service: keep-alive HTTP/1.1, a fixed 2 KiB answer ------------
cat >"$WORK/service.py" <<'PY'
import asyncio, sys

BODY = b"x" * 2048
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: sid=bench\r\n"
        b"Content-Length: %d\r\n\r\n" % len(BODY))

class Service(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:  # bench requests carry no body
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.transport.write(HEAD + BODY)

async def main():
    server = await asyncio.get_running_loop().create_server(Service, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
PY
python3 "$WORK/service.py" >"$WORK/service.out" &
PIDS+=($!)
SERVICE_PORT=
for _ in $(seq 50); do
    SERVICE_PORT=$(head -n1 "$WORK/service.out" 2>/dev/null || true)
    [[ -n $SERVICE_PORT ]] && break
    sleep 0.1
done
[[ -n $SERVICE_PORT ]] || die "the local service did not start."

# run_wrk NAME URL [wrk args...]: measure, keeping wrk's report in $WORK/NAME.txt.
run_wrk() {
    local name=$1 url=$2
    shift 2
    if [[ $WARMUP -gt 0 ]]; then
        wrk -t1 -c4 -d"${WARMUP}s" "$@" "$url" >/dev/null
    fi
    say "measuring $name: wrk $WRK_ARGS $* $url"
    # shellcheck disable=SC2086 # WRK_ARGS is a word list on purpose
    wrk $WRK_ARGS "$@" "$url" | tee "$WORK/$name.txt" >&2
}

# tunnel_run NAME RETENTION: a fresh server with that retention, a share, wrk through it.
tunnel_run() {
    local name=$1 retention=$2 data=$WORK/data-$1
    "$BIN" server --listen 127.0.0.1:0 --data "$data" --inspect-retention "$retention" \
        >"$WORK/$name-server.out" 2>"$WORK/$name-server.err" &
    local server_pid=$!
    PIDS+=("$server_pid")
    local addr=
    for _ in $(seq 100); do
        addr=$(sed -n 's/^berth listening on http:\/\/\([^ ]*\) .*/\1/p' "$WORK/$name-server.out" | head -n1)
        [[ -n $addr ]] && break
        sleep 0.1
    done
    [[ -n $addr ]] || die "the $name server did not report its address."
    local password
    password=bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    printf '%s\n' "$password" |
        "$BIN" admin create-user bench --crew bench --role owner --password-stdin --data "$data" >/dev/null
    local token
    token=$(curl -sS --fail-with-body -u "bench:$password" -X POST "http://$addr/api/v1/tokens" \
        -H 'Content-Type: application/json' -d '{"name":"bench"}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])') ||
        die "could not mint a token on the $name server."
    # share prints one line per request; they go to a file, as a user's terminal would take them.
    BERTH_CONFIG=$WORK/none.json BERTH_SERVER=http://$addr BERTH_TOKEN=$token \
        "$BIN" share "$SERVICE_PORT" --host 127.0.0.1 --subdomain bench \
        >"$WORK/$name-share.out" 2>"$WORK/$name-share.err" &
    local share_pid=$!
    PIDS+=("$share_pid")
    local ok=
    for _ in $(seq 100); do
        if grep -q '^Forwarding ' "$WORK/$name-share.out" 2>/dev/null; then
            ok=1
            break
        fi
        sleep 0.1
    done
    [[ -n $ok ]] || die "berth share did not open the $name tunnel: $(cat "$WORK/$name-share.err")"
    code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Host: bench.localhost' "http://$addr/warm")
    [[ $code == 200 ]] || die "a request through the $name tunnel answered $code."
    run_wrk "$name" "http://$addr/bench?page=1" -H 'Host: bench.localhost' -H 'Cookie: session=bench'
    local tunnel
    tunnel=$(curl -sS -H "Authorization: Bearer $token" "http://$addr/api/v1/tunnels?active=1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["tunnels"][0]["id"])')
    stop "$share_pid"
    stop "$server_pid"
    # After a clean stop every queued record is written; read the count offline.
    RECORDED[$name]=$(python3 - "$data/berth.db" "$tunnel" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(db.execute("SELECT request_count FROM tunnels WHERE id = ?", (sys.argv[2],)).fetchone()[0])
PY
    )
    DROPPED[$name]=$(sed -n 's/.*inspector dropped \([0-9]*\) records.*/\1/p' "$WORK/$name-server.out")
}

declare -A RECORDED DROPPED
run_wrk direct "http://127.0.0.1:$SERVICE_PORT/bench"
tunnel_run recording 1000
tunnel_run off 0

rps() { awk '/^Requests\/sec:/ {print $2}' "$WORK/$1.txt"; }
total() { awk '/requests in/ {print $1}' "$WORK/$1.txt"; }
pct() {
    awk -v p="$2%" '$1 == p {
        v = $2; n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.2f", n; exit
    }' "$WORK/$1.txt"
}
errors() { awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {n += 1} END {print n + 0}' "$WORK/$1.txt"; }

echo
echo "berth inspector benchmark ($(nproc 2>/dev/null || echo '?') CPUs, wrk $WRK_ARGS, warm-up ${WARMUP}s)"
echo "  binary:  $BIN"
for name in direct recording off; do
    printf '  %-34s %10s req/s   p50 %7s ms   p99 %7s ms\n' \
        "$(case $name in direct) echo 'direct to the service' ;; recording) echo 'tunnel, recording (retention 1000)' ;; off) echo 'tunnel, recording off (retention 0)' ;; esac)" \
        "$(rps $name)" "$(pct $name 50)" "$(pct $name 99)"
done
RATIO=$(awk -v a="$(rps recording)" -v b="$(rps off)" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
echo "  recording/off: ${RATIO}x"
echo "  recorded (request_count) during the recording run: ${RECORDED[recording]} of $(total recording) wrk requests (+ warm-up), dropped: ${DROPPED[recording]:-0}"
echo "  recorded with recording off: ${RECORDED[off]}"

bad=0
for name in direct recording off; do
    if [[ $(errors "$name") -gt 0 ]]; then
        grep -E 'Non-2xx|Socket errors' "$WORK/$name.txt" >&2 || true
        bad=1
    fi
done
[[ $bad -eq 0 ]] || die "the run is not valid: requests failed under load."
[[ ${RECORDED[off]} -eq 0 ]] || die "recording off still recorded ${RECORDED[off]} requests."
[[ ${RECORDED[recording]} -gt 0 ]] || die "the recording run recorded nothing."
