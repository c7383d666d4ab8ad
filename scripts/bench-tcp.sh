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

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
STREAMS=${STREAMS:-8}
TCP_PORTS=${TCP_PORTS:-20000-20099}
GOAL=${GOAL:-0.40}

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench-tcp: %s\n' "$*" >&2
    exit 1
}

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required; $2"; }
need curl "install it (e.g. apt-get install -y curl)."
need python3 "install it (e.g. apt-get install -y python3); it reads iperf3's JSON."
need iperf3 "install it first, e.g. \`sudo apt-get install -y iperf3\` (Debian/Ubuntu) or \`brew install iperf3\` (macOS)."

# --- 1. the binary ---------------------------------------------------------
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

# --- 3. the server ---------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-tcp.XXXXXX")
DATA=$WORK/data
SERVER_PID=
SHARE_PID=
IPERF_PID=
stop() {
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local status=$?
    stop "$SHARE_PID"
    stop "$IPERF_PID"
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting berth server (data $DATA)"
"$BIN" server --listen 127.0.0.1:0 --data "$DATA" --tcp-ports "$TCP_PORTS" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!

ADDR=
for _ in $(seq 100); do
    ADDR=$(sed -n 's/^berth listening on http:\/\/\([^ ]*\) .*/\1/p' "$WORK/server.out" | head -n1)
    [[ -n $ADDR ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $ADDR ]]; then
    cat "$WORK/server.out" "$WORK/server.err" >&2 || true
    die "the server did not report its address."
fi
BASE=http://$ADDR
say "server listening on $BASE"

# --- 4. a user and a token -------------------------------------------------
PASSWORD=bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$PASSWORD" |
    "$BIN" admin create-user bench --crew bench --role owner --password-stdin --data "$DATA" >&2 ||
    die "could not create the bench user."

REPLY=$(curl -sS --fail-with-body -u "bench:$PASSWORD" -X POST "$BASE/api/v1/tokens" \
    -H 'Content-Type: application/json' -d '{"name":"bench"}') ||
    die "could not mint a token: $REPLY"
if command -v python3 >/dev/null 2>&1; then
    TOKEN=$(printf '%s' "$REPLY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
else
    TOKEN=$(printf '%s' "$REPLY" | sed -n 's/.*"secret":"\([^"]*\)".*/\1/p')
fi
[[ -n $TOKEN ]] || die "no secret in the token reply: $REPLY"

code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/me")
[[ $code == 200 ]] || die "GET /api/v1/me with the new token answered $code, not 200."

# --- 5. iperf3 and the tunnel ----------------------------------------------
# A free loopback port for iperf3's server: bound by the OS, then released.
IPERF_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" >"$WORK/iperf3.out" 2>&1 &
IPERF_PID=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$IPERF_PORT") 2>/dev/null && break
    sleep 0.1
done

say "berth share $IPERF_PORT --tcp"
BERTH_CONFIG=$WORK/cli.json BERTH_SERVER=$BASE BERTH_TOKEN=$TOKEN \
    "$BIN" share "$IPERF_PORT" --tcp --host 127.0.0.1 >"$WORK/share.out" 2>"$WORK/share.err" &
SHARE_PID=$!
PUBLIC=
for _ in $(seq 100); do
    PUBLIC=$(sed -n 's/^Forwarding tcp:\/\/[^ ]*:\([0-9]*\) .*/\1/p' "$WORK/share.out" | head -n1)
    [[ -n $PUBLIC ]] && break
    kill -0 "$SHARE_PID" 2>/dev/null || break
    sleep 0.1
done
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

# --- 6. summary ------------------------------------------------------------
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
