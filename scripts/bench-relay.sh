#!/usr/bin/env bash
# Benchmark the HTTP relay on loopback: a 1 KiB keep-alive origin served direct
# and through a berth tunnel (wrk), fresh-connection time to first byte (curl),
# idle memory of server + share client, and server memory per idle tunnel.
#
# Usage: scripts/bench-relay.sh
#
# Environment:
#   BERTH_BIN    use this berth binary instead of building target/release/berth
#   ORIGIN_BIN   use this origin instead of building examples/bench-origin.rs (release)
#   WRK_ARGS     wrk load parameters (default: -t2 -c64 -d10s --latency)
#   WARMUP       seconds of warm-up before each wrk run (default 2; 0 = none)
#   TTFB_RUNS    fresh connections timed each way (default 200)
#   TUNNELS      idle tunnels held open for the memory figure (default 1000; 0 = skip)
#   REFERENCE    1 (default when haproxy is installed): also measure two chained
#                haproxy instances in TCP mode, one thread each, in front of the same
#                origin: an ideal event-driven relay of two hops (public side and
#                client side, as a tunnel has) that parses nothing and records
#                nothing, to show what any relay of this shape reaches here. 0 = skip.
#
# Goals (reported as PASS or BELOW GOAL, never a failure of the script):
# tunnel/direct req/s >= 0.70, tunnel p99 <= 1.1x direct, TTFB p50 <= 2.0x direct,
# idle server + client RSS <= 10 MiB, <= 64 KiB server RSS per idle tunnel.
# The script fails only when the benchmark cannot run or is invalid.
set -euo pipefail

WRK_ARGS=${WRK_ARGS:--t2 -c64 -d10s --latency}
WARMUP=${WARMUP:-2}
TTFB_RUNS=${TTFB_RUNS:-200}
TUNNELS=${TUNNELS:-1000}

SCRIPT=bench-relay
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wrk_latency
need curl "install it (e.g. apt-get install -y curl)."
need wrk "install it (e.g. apt-get install -y wrk)."
need python3 "install it (e.g. apt-get install -y python3); it runs scripts/idle-tunnels.py."

# --- 1. binaries -------------------------------------------------------------
berth_bin release
if [[ -n ${ORIGIN_BIN:-} ]]; then
    ORIGIN=$ORIGIN_BIN
else
    need cargo "install Rust or set ORIGIN_BIN to a built bench-origin."
    say "building the origin (cargo build --release --example bench-origin)"
    (cd "$ROOT" && cargo build --release --quiet --example bench-origin)
    ORIGIN=$ROOT/target/release/examples/bench-origin
fi
# Each idle tunnel holds a control and parked data connections open.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- 2. processes --------------------------------------------------------------
workdir berth-bench-relay

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Proportional set size: shared pages (the binary both processes map) counted once.
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
anon_kib() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status"; }

say "starting the origin and berth server"
"$ORIGIN" >"$WORK/origin.out" &
ORIGIN_PID=$!
track "$ORIGIN_PID"
ORIGIN_PORT=$(await_line "$WORK/origin.out" 1p "$ORIGIN_PID")
[[ -n $ORIGIN_PORT ]] || die "the origin did not report its port."
server_with_token relay "${LOAD_FLAGS[@]}"
RELAY_PID=$SERVER_PID

start_share share "$BASE" "$TOKEN" "$ORIGIN_PORT" --host 127.0.0.1
TUNNEL_URL=$(await_line "$WORK/share.out" "$FORWARDING" "$SHARE_PID")
[[ -n $TUNNEL_URL ]] || die "share did not open a tunnel: $(cat "$WORK/share.err")"
THOST=${TUNNEL_URL#http://}
DIRECT=http://127.0.0.1:$ORIGIN_PORT/
code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Host: $THOST" "$BASE/")
[[ $code == 200 ]] || die "a request through the tunnel answered $code, not 200."

# --- 3. idle memory --------------------------------------------------------------
sleep 2
IDLE_SERVER=$(rss_kib "$RELAY_PID")
IDLE_CLIENT=$(rss_kib "$SHARE_PID")
IDLE_TOTAL=$((IDLE_SERVER + IDLE_CLIENT))
IDLE_PSS=$(($(pss_kib "$RELAY_PID") + $(pss_kib "$SHARE_PID")))
IDLE_ANON=$(anon_kib "$RELAY_PID")

# --- 4. throughput and latency (wrk) ---------------------------------------------
CPU_PIDS=$ORIGIN_PID run_wrk direct "$DIRECT"
CPU_PIDS="$ORIGIN_PID $RELAY_PID $SHARE_PID" run_wrk tunnel "$BASE/" -H "Host: $THOST"

# --- 4b. the reference: two haproxy hops -----------------------------------------
REFERENCE=${REFERENCE:-$(command -v haproxy >/dev/null 2>&1 && echo 1 || echo 0)}
RUNS=(direct tunnel)
if [[ $REFERENCE == 1 ]]; then
    need haproxy "install it (e.g. apt-get install -y haproxy) or set REFERENCE=0."
    free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    # haproxy_hop NAME LISTEN_PORT TO_PORT: a one-thread TCP forwarder, daemonised.
    haproxy_hop() {
        cat >"$WORK/$1.cfg" <<EOF
global
  maxconn 4000
  nbthread 1
  pidfile $WORK/$1.pid
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend in
  bind 127.0.0.1:$2
  default_backend out
backend out
  server origin 127.0.0.1:$3
EOF
        haproxy -D -q -f "$WORK/$1.cfg" || die "haproxy ($1) did not start."
        for _ in $(seq 50); do [[ -s $WORK/$1.pid ]] && break; sleep 0.1; done
        [[ -s $WORK/$1.pid ]] || die "haproxy ($1) wrote no pid file."
        track "$(cat "$WORK/$1.pid")"
    }
    HOP2=$(free_port)
    haproxy_hop hop2 "$HOP2" "$ORIGIN_PORT"
    HOP1=$(free_port)
    haproxy_hop hop1 "$HOP1" "$HOP2"
    HOP_PIDS="$(cat "$WORK/hop1.pid") $(cat "$WORK/hop2.pid")"
    CPU_PIDS=$HOP_PIDS run_wrk haproxy2 "http://127.0.0.1:$HOP1/"
    RUNS+=(haproxy2)
fi

for name in "${RUNS[@]}"; do
    [[ $(errors "$name") -eq 0 ]] || die "the $name run had failed requests: $(grep -E 'Non-2xx|Socket errors' "$WORK/$name.txt")"
done

# --- 5. fresh-connection time to first byte (curl) -------------------------------
# ttfb NAME URL [curl args]: TTFB_RUNS fresh connections, one per curl, in ms.
ttfb() {
    local name=$1 url=$2
    shift 2
    say "timing $TTFB_RUNS fresh connections: $name"
    for _ in $(seq "$TTFB_RUNS"); do
        curl -s -o /dev/null -w '%{time_starttransfer}\n' "$@" "$url"
    done | awk '{printf "%.3f\n", $1 * 1000}' | sort -n >"$WORK/ttfb-$name.txt"
}
ttfb direct "$DIRECT"
ttfb tunnel "$BASE/" -H "Host: $THOST"
quantile() { awk -v q="$2" '{a[NR] = $1} END {i = int(NR * q); if (i < 1) i = 1; print a[i]}' "$WORK/ttfb-$1.txt"; }

# --- 6. memory per idle tunnel -------------------------------------------------------
PER_TUNNEL=
if [[ $TUNNELS -gt 0 ]]; then
    # One user holds every idle tunnel: past the default per-user and per-crew limits.
    server_with_token idle "${LOAD_FLAGS[@]}" --max-tunnels-per-user "$TUNNELS" --max-tunnels-per-crew "$TUNNELS"
    IDLE_PID=$SERVER_PID
    curl -sS -o /dev/null -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/v1/me"
    sleep 1
    BEFORE=$(rss_kib "$IDLE_PID")
    say "opening $TUNNELS idle tunnels (scripts/idle-tunnels.py)"
    python3 "$ROOT/scripts/idle-tunnels.py" "$ADDR" "$TOKEN" "$TUNNELS" >"$WORK/idle.out" 2>"$WORK/idle.err" &
    track "$!"
    for _ in $(seq 3000); do
        grep -q '^ready' "$WORK/idle.out" 2>/dev/null && break
        kill -0 "${PIDS[-1]}" 2>/dev/null || die "idle-tunnels failed: $(cat "$WORK/idle.err")"
        sleep 0.1
    done
    grep -q '^ready' "$WORK/idle.out" || die "idle-tunnels did not get $TUNNELS tunnels ready in 300 s."
    sleep 2
    AFTER=$(rss_kib "$IDLE_PID")
    THREADS=$(awk '/^Threads:/ {print $2}' "/proc/$IDLE_PID/status")
    code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/v1/me")
    [[ $code == 200 ]] || die "with $TUNNELS idle tunnels the API answered $code, not 200."
    PER_TUNNEL=$(awk -v a="$AFTER" -v b="$BEFORE" -v n="$TUNNELS" 'BEGIN {printf "%.1f", (a - b) / n}')
fi

# --- 7. summary ---------------------------------------------------------------------
verdict() { awk -v v="$1" -v g="$2" -v op="$3" 'BEGIN {ok = (op == ">=" ? v >= g : v <= g); print (ok ? "PASS" : "BELOW GOAL")}'; }
D_RPS=$(rps direct)
T_RPS=$(rps tunnel)
RATIO=$(awk -v t="$T_RPS" -v d="$D_RPS" 'BEGIN {printf "%.2f", (d > 0 ? t / d : 0)}')
P99_RATIO=$(awk -v t="$(pct tunnel 99)" -v d="$(pct direct 99)" 'BEGIN {printf "%.2f", (d > 0 ? t / d : 0)}')
D50=$(quantile direct 0.5)
T50=$(quantile tunnel 0.5)
TTFB_RATIO=$(awk -v t="$T50" -v d="$D50" 'BEGIN {printf "%.2f", (d > 0 ? t / d : 0)}')

echo
echo "berth relay benchmark ($(nproc 2>/dev/null || echo '?') CPUs, loopback, 1 KiB keep-alive origin)"
echo "  binary: $BIN"
printf '  wrk %s\n' "$WRK_ARGS"
printf '    %-8s %10s req/s   p50 %7s ms   p99 %7s ms\n' \
    direct "$D_RPS" "$(pct direct 50)" "$(pct direct 99)" \
    tunnel "$T_RPS" "$(pct tunnel 50)" "$(pct tunnel 99)"
echo "    req/s tunnel/direct: ${RATIO}x (goal >= 0.70x): $(verdict "$RATIO" 0.70 '>=')"
echo "    p99 tunnel/direct:   ${P99_RATIO}x (goal <= 1.10x): $(verdict "$P99_RATIO" 1.10 '<=')"
D_FIXED=$(cpu_per_request direct wrk "$ORIGIN_PID")
T_RELAY=$(cpu_per_request tunnel "$RELAY_PID" "$SHARE_PID")
# At the goal's req/s every CPU is busy at most as long as each request's share:
# NCPU / (0.70 * direct req/s); wrk and the origin take what they took direct.
NCPU=$(nproc)
BUDGET=$(awk -v n="$NCPU" -v d="$D_RPS" 'BEGIN {printf "%.1f", (d > 0 ? n * 1e6 / (0.70 * d) : 0)}')
LEFT=$(awk -v b="$BUDGET" -v f="$D_FIXED" 'BEGIN {printf "%.1f", b - f}')
echo "  CPU per request (user + system, microseconds)"
echo "    direct: wrk $(cpu_per_request direct wrk), origin $(cpu_per_request direct "$ORIGIN_PID")"
echo "    tunnel: wrk $(cpu_per_request tunnel wrk), origin $(cpu_per_request tunnel "$ORIGIN_PID"), server $(cpu_per_request tunnel "$RELAY_PID"), share $(cpu_per_request tunnel "$SHARE_PID")"
echo "    at 0.70x of direct req/s a request may cost $NCPU CPUs / (0.70 x $D_RPS req/s) = $BUDGET; wrk and the origin took $D_FIXED direct, which leaves the relay $LEFT (it took $T_RELAY)"
if [[ $REFERENCE == 1 ]]; then
    H_RPS=$(rps haproxy2)
    H_RATIO=$(awk -v t="$H_RPS" -v d="$D_RPS" 'BEGIN {printf "%.2f", (d > 0 ? t / d : 0)}')
    H_P99=$(awk -v t="$(pct haproxy2 99)" -v d="$(pct direct 99)" 'BEGIN {printf "%.2f", (d > 0 ? t / d : 0)}')
    printf '    %-8s %10s req/s   p50 %7s ms   p99 %7s ms\n' \
        haproxy2 "$H_RPS" "$(pct haproxy2 50)" "$(pct haproxy2 99)"
    echo "    reference (2 haproxy hops, TCP mode)/direct: ${H_RATIO}x req/s, p99 ${H_P99}x"
    # shellcheck disable=SC2086 # two PIDs
    echo "    CPU per request of the two haproxy hops: $(cpu_per_request haproxy2 $HOP_PIDS) microseconds"
fi
echo "  time to first byte, $TTFB_RUNS fresh connections each (curl)"
printf '    %-8s p50 %7s ms   p90 %7s ms\n' \
    direct "$D50" "$(quantile direct 0.9)" tunnel "$T50" "$(quantile tunnel 0.9)"
echo "    p50 tunnel/direct: ${TTFB_RATIO}x (goal <= 2.00x): $(verdict "$TTFB_RATIO" 2.0 '<=')"
echo "  idle RSS: server $IDLE_SERVER KiB + share $IDLE_CLIENT KiB = $IDLE_TOTAL KiB (goal <= 10240 KiB): $(verdict "$IDLE_TOTAL" 10240 '<=')"
echo "    PSS (shared binary pages counted once): $IDLE_PSS KiB; server anonymous memory $IDLE_ANON KiB"
if [[ -n $PER_TUNNEL ]]; then
    echo "  $TUNNELS idle tunnels: server RSS $BEFORE -> $AFTER KiB, $THREADS threads"
    echo "    per idle tunnel: $PER_TUNNEL KiB (goal <= 64 KiB): $(verdict "$PER_TUNNEL" 64 '<=')"
fi
