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

WRK_ARGS=${WRK_ARGS:--t2 -c32 -d10s --latency}
WARMUP=${WARMUP:-2}

SCRIPT=bench-inspect
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wrk_latency
need curl "install it (e.g. apt-get install -y curl)."
need python3 "install it (e.g. apt-get install -y python3); it runs the local service."
need wrk "install it first, e.g. \`sudo apt-get install -y wrk\` (Debian/Ubuntu) or \`brew install wrk\` (macOS)."

berth_bin release
workdir berth-bench-inspect

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
track "$!"
SERVICE_PORT=$(await_line "$WORK/service.out" 1p "$!")
[[ -n $SERVICE_PORT ]] || die "the local service did not start."

# tunnel_run NAME RETENTION: a fresh server with that retention, a share, wrk through it.
tunnel_run() {
    local name=$1 retention=$2 data=$WORK/data-$1
    start_server "$name-server" "$data" --inspect-retention "$retention" "${LOAD_FLAGS[@]}"
    local server_pid=$SERVER_PID addr=$ADDR
    create_user "$data" bench
    local token
    token=$(mint_token "$BASE" bench "$PASSWORD" bench)
    # share prints one line per request; they go to a file, as a user's terminal would take them.
    start_share "$name-share" "$BASE" "$token" "$SERVICE_PORT" --host 127.0.0.1 --subdomain bench
    local share_pid=$SHARE_PID
    [[ -n $(await_line "$WORK/$name-share.out" '/^Forwarding /p' "$share_pid") ]] ||
        die "berth share did not open the $name tunnel: $(cat "$WORK/$name-share.err")"
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

total() { awk '/requests in/ {print $1}' "$WORK/$1.txt"; }

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
