#!/usr/bin/env bash
# Benchmark TCP tunnels with iperf3 on loopback: iperf3 straight to its server
# against iperf3 through a berth TCP tunnel (client -> public port -> berth server
# -> data connection -> berth share -> iperf3 server), one stream and -P 8.
#
# Usage: scripts/bench-tcp.sh
#
# Environment:
#   BERTH_BIN   use this berth binary instead of building target/release/berth
#   DURATION    seconds per iperf3 run (default 10)
#   STREAMS     parallel streams of the second pair of runs (default 8)
#   TCP_PORTS   the server's --tcp-ports (default 20000-20099)
#   GOAL        least acceptable tunnel/direct ratio, single stream (default 0.40)
#
# The ratio is reported as PASS or BELOW GOAL; it never makes the script fail.
# The script fails (non-zero) only when the benchmark itself cannot run.
set -euo pipefail

DURATION=${DURATION:-10}
STREAMS=${STREAMS:-8}
TCP_PORTS=${TCP_PORTS:-20000-20099}
GOAL=${GOAL:-0.40}

SCRIPT=bench-tcp
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need curl "install it (e.g. apt-get install -y curl)."
need python3 "install it (e.g. apt-get install -y python3); it reads iperf3's JSON."
need iperf3 "install it first, e.g. \`sudo apt-get install -y iperf3\` (Debian/Ubuntu) or \`brew install iperf3\` (macOS)."

# --- 1. the binary ---------------------------------------------------------
berth_bin release

# --- 2. the server ---------------------------------------------------------
workdir berth-bench-tcp
DATA=$WORK/data
say "starting berth server (data $DATA)"
start_server server "$DATA" --tcp-ports "$TCP_PORTS" "${LOAD_FLAGS[@]}"
say "server listening on $BASE"

# --- 3. a user and a token -------------------------------------------------
create_user "$DATA" bench
TOKEN=$(mint_token "$BASE" bench "$PASSWORD" bench)

code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/me")
[[ $code == 200 ]] || die "GET /api/v1/me with the new token answered $code, not 200."

# --- 4. iperf3 and the tunnel ----------------------------------------------
# A free loopback port for iperf3's server: bound by the OS, then released.
IPERF_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" --forceflush >"$WORK/iperf3.out" 2>&1 &
track "$!"
# Wait for iperf3 to say it listens: a probe connection would count as a test.
for _ in $(seq 100); do
    grep -q "Server listening" "$WORK/iperf3.out" 2>/dev/null && break
    sleep 0.1
done

say "berth share $IPERF_PORT --tcp"
start_share share "$BASE" "$TOKEN" "$IPERF_PORT" --tcp --host 127.0.0.1
PUBLIC=$(await_line "$WORK/share.out" 's/^Forwarding tcp:\/\/[^ ]*:\([0-9]*\) .*/\1/p' "$SHARE_PID")
if [[ -z $PUBLIC ]]; then
    cat "$WORK/share.out" "$WORK/share.err" >&2 || true
    die "berth share did not report its public port."
fi
say "tunnel: 127.0.0.1:$PUBLIC -> 127.0.0.1:$IPERF_PORT"

# run_iperf NAME PORT STREAMS: one iperf3 run, its JSON kept in $WORK/NAME.json.
run_iperf() {
    local name=$1 port=$2 streams=$3
    say "measuring $name: iperf3 -c 127.0.0.1 -p $port -P $streams -t $DURATION"
    iperf3 -c 127.0.0.1 -p "$port" -P "$streams" -t "$DURATION" -J >"$WORK/$name.json" ||
        die "iperf3 failed for $name: $(head -c 500 "$WORK/$name.json")"
}
# Received Gbit/s of a run.
gbits() {
    python3 -c 'import json, sys
run = json.load(open(sys.argv[1]))
print("%.2f" % (run["end"]["sum_received"]["bits_per_second"] / 1e9))' "$WORK/$1.json"
}

run_iperf direct-1 "$IPERF_PORT" 1
run_iperf tunnel-1 "$PUBLIC" 1
run_iperf direct-n "$IPERF_PORT" "$STREAMS"
run_iperf tunnel-n "$PUBLIC" "$STREAMS"

# --- 5. summary ------------------------------------------------------------
ratio() { awk -v t="$1" -v d="$2" 'BEGIN {printf "%.2f", (d > 0 ? t / d : 0)}'; }
D1=$(gbits direct-1)
T1=$(gbits tunnel-1)
DN=$(gbits direct-n)
TN=$(gbits tunnel-n)
R1=$(ratio "$T1" "$D1")
RN=$(ratio "$TN" "$DN")
VERDICT=$(awk -v r="$R1" -v g="$GOAL" 'BEGIN {print (r >= g ? "PASS" : "BELOW GOAL")}')

echo
echo "berth TCP tunnel benchmark ($(nproc 2>/dev/null || echo '?') CPUs, iperf3 -t $DURATION on loopback)"
echo "  binary:  $BIN"
printf '  %-22s %8s Gbit/s direct   %8s Gbit/s tunnel   ratio %sx\n' \
    "1 stream" "$D1" "$T1" "$R1" \
    "$STREAMS streams (-P $STREAMS)" "$DN" "$TN" "$RN"
echo "  single-stream ratio tunnel/direct: ${R1}x (goal at least ${GOAL}x): $VERDICT"
