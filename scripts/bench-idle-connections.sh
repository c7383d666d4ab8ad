#!/usr/bin/env bash
# Many idle public connections through one tunnel: N WebSockets held open through
# one `berth share` to a WebSocket origin, as live-reload pages and chat clients
# hold them. Reports the server's (and share's) RSS per held connection and their
# threads, and how fast /healthz and the API answer while the connections are held.
#
# Usage: scripts/bench-idle-connections.sh
#
# Environment:
#   BERTH_BIN    use this berth binary instead of building target/release/berth
#   CONNECTIONS  WebSockets held open (default 5000)
#   PROBES       /healthz and API calls timed while they are held (default 50 each)
#
# The server runs with its connection bound (BERTH_MAX_CONNECTIONS) and per-address
# cap (--max-connections-per-ip) raised for the run, and its bounds on tunnels and
# TCP tunnel connections (BERTH_MAX_TUNNELS, BERTH_MAX_TCP_CONNECTIONS) lowered so
# that the open files go to connections; the load comes from
# scripts/idle-websockets.py, a process of its own. Each process needs about two
# open files per connection: the script raises `ulimit -n` to the hard limit.
#
# Goals (reported as PASS or BELOW GOAL, never a failure of the script): at most
# 16 KiB of server RSS per held connection; /healthz and GET /api/v1/me answer
# within 50 ms (slowest of PROBES) while they are held. The script fails only when
# the benchmark cannot run: a refused or dropped connection is a failure.
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-5000}
PROBES=${PROBES:-50}

SCRIPT=bench-idle-connections
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need curl "install it (e.g. apt-get install -y curl)."
need python3 "install it (e.g. apt-get install -y python3); it runs scripts/idle-websockets.py."

berth_bin release
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FILES=$(ulimit -n)
[[ $FILES == unlimited || $FILES -gt $((2 * CONNECTIONS + 256)) ]] ||
    die "$CONNECTIONS connections need about $((2 * CONNECTIONS + 256)) open files per process; ulimit -n allows $FILES (raise the hard limit or lower CONNECTIONS)."

workdir berth-bench-idle
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$1/status"; }

say "starting the WebSocket origin and berth server"
python3 "$ROOT/scripts/idle-websockets.py" origin >"$WORK/origin.out" 2>"$WORK/origin.err" &
ORIGIN_PID=$!
track "$ORIGIN_PID"
ORIGIN_PORT=$(await_line "$WORK/origin.out" 1p "$ORIGIN_PID")
[[ -n $ORIGIN_PORT ]] || die "the origin did not report its port: $(cat "$WORK/origin.err")"

# Public tunnel traffic may hold three quarters of the bound; few tunnels and TCP
# connections are asked for, so the open files go to connections.
export BERTH_MAX_CONNECTIONS=$((CONNECTIONS * 4 / 3 + 256))
export BERTH_MAX_TUNNELS=16
export BERTH_MAX_TCP_CONNECTIONS=64
server_with_token idle "${LOAD_FLAGS[@]}"
RELAY_PID=$SERVER_PID
LIMITS=$(sed -n 's/^berth limits: //p' "$WORK/idle.out" | head -n1)
say "server bounds: $LIMITS"

start_share share "$BASE" "$TOKEN" "$ORIGIN_PORT" --host 127.0.0.1
TUNNEL_URL=$(await_line "$WORK/share.out" "$FORWARDING" "$SHARE_PID")
[[ -n $TUNNEL_URL ]] || die "share did not open a tunnel: $(cat "$WORK/share.err")"
THOST=${TUNNEL_URL#http://}
THOST=${THOST%/}

# One WebSocket first, so that what the tunnel itself costs is in the baseline.
python3 "$ROOT/scripts/idle-websockets.py" load "$ADDR" "$THOST" 1 >"$WORK/one.out" 2>"$WORK/one.err" &
ONE_PID=$!
track "$ONE_PID"
[[ -n $(await_line "$WORK/one.out" '/^ready/p' "$ONE_PID" 30) ]] ||
    die "one WebSocket through the tunnel did not open: $(cat "$WORK/one.err")"
sleep 2
SERVER_BEFORE=$(rss_kib "$RELAY_PID")
SHARE_BEFORE=$(rss_kib "$SHARE_PID")

say "holding $CONNECTIONS WebSockets open through the tunnel (scripts/idle-websockets.py)"
python3 "$ROOT/scripts/idle-websockets.py" load "$ADDR" "$THOST" "$CONNECTIONS" >"$WORK/load.out" 2>"$WORK/load.err" &
LOAD_PID=$!
track "$LOAD_PID"
[[ -n $(await_line "$WORK/load.out" '/^ready/p' "$LOAD_PID" 600) ]] ||
    die "the $CONNECTIONS WebSockets did not open: $(cat "$WORK/load.err")"
sleep 3
SERVER_AFTER=$(rss_kib "$RELAY_PID")
SHARE_AFTER=$(rss_kib "$SHARE_PID")
SERVER_THREADS=$(threads "$RELAY_PID")
SHARE_THREADS=$(threads "$SHARE_PID")

# probe NAME URL [curl args]: PROBES calls one after another, their times in ms, sorted.
probe() {
    local name=$1 url=$2
    shift 2
    for _ in $(seq "$PROBES"); do
        curl -sS -o /dev/null -w '%{http_code} %{time_total}\n' "$@" "$url"
    done >"$WORK/probe-$name.raw"
    awk '$1 != 200 {bad = 1} END {exit bad}' "$WORK/probe-$name.raw" ||
        die "while the connections were held $url answered: $(sort -u "$WORK/probe-$name.raw" | head -3)"
    awk '{printf "%.2f\n", $2 * 1000}' "$WORK/probe-$name.raw" | sort -n >"$WORK/probe-$name.txt"
}
say "timing /healthz and GET /api/v1/me, $PROBES each"
probe healthz "$BASE/healthz"
probe api "$BASE/api/v1/me" -H "Authorization: Bearer $TOKEN"
kill -0 "$LOAD_PID" 2>/dev/null || die "the load tool lost connections: $(cat "$WORK/load.err")"

median() { awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}' "$WORK/probe-$1.txt"; }
slowest() { tail -n1 "$WORK/probe-$1.txt"; }
verdict() { awk -v v="$1" -v g="$2" 'BEGIN {print (v <= g ? "PASS" : "BELOW GOAL")}'; }
per() { awk -v a="$1" -v b="$2" -v n="$CONNECTIONS" 'BEGIN {printf "%.1f", (a - b) / n}'; }
SERVER_PER=$(per "$SERVER_AFTER" "$SERVER_BEFORE")
SHARE_PER=$(per "$SHARE_AFTER" "$SHARE_BEFORE")

echo
echo "berth idle connections benchmark ($(nproc 2>/dev/null || echo '?') CPUs, loopback, $CONNECTIONS WebSockets through one tunnel)"
echo "  binary: $BIN"
echo "  server bounds: $LIMITS"
echo "  server RSS $SERVER_BEFORE -> $SERVER_AFTER KiB, $SERVER_THREADS threads: $SERVER_PER KiB per connection (goal <= 16 KiB): $(verdict "$SERVER_PER" 16)"
echo "  share  RSS $SHARE_BEFORE -> $SHARE_AFTER KiB, $SHARE_THREADS threads: $SHARE_PER KiB per connection"
echo "  while held, $PROBES calls each (ms): /healthz p50 $(median healthz), slowest $(slowest healthz): $(verdict "$(slowest healthz)" 50)"
echo "                                  GET /api/v1/me p50 $(median api), slowest $(slowest api): $(verdict "$(slowest api)" 50)"
