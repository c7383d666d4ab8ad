#!/usr/bin/env bash
# Benchmark the berth API with wrk: GET /healthz (no auth, no database) against
# GET /api/v1/me with a bearer token (one full token verification per request:
# parse + SHA-256 + token, membership and user lookups in SQLite, then JSON).
#
# Usage: scripts/bench-api.sh
#
# Environment:
#   BERTH_BIN   use this berth binary instead of building target/release/berth
#   WRK_ARGS    wrk load parameters (default: -t2 -c32 -d10s --latency);
#               --latency is added if missing, since p50/p99 come from it
#   WARMUP      seconds of warm-up per endpoint before measuring (default 2; 0 = none)
#   GOAL        least acceptable me/healthz ratio (default 0.5)
#
# The ratio is reported as PASS or BELOW GOAL; it never makes the script fail.
# The script fails (non-zero) only when the benchmark itself cannot run or is
# invalid (build or server failure, no token, non-2xx responses under load).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WRK_ARGS=${WRK_ARGS:--t2 -c32 -d10s --latency}
WARMUP=${WARMUP:-2}
GOAL=${GOAL:-0.5}
case " $WRK_ARGS " in
*" --latency "* | *" -L "*) ;;
*) WRK_ARGS="$WRK_ARGS --latency" ;;
esac

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench-api: %s\n' "$*" >&2
    exit 1
}

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required; $2"; }
need curl "install it (e.g. apt-get install -y curl)."

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

# --- 2. wrk ----------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing wrk (apt-get install -y wrk)"
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
    else
        die "wrk is not installed; install it first, e.g. \`sudo apt-get install -y wrk\` (Debian/Ubuntu) or \`brew install wrk\` (macOS)."
    fi
fi

# --- 3. the server ---------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX")
DATA=$WORK/data
SERVER_PID=
cleanup() {
    local status=$?
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
"$BIN" server --listen 127.0.0.1:0 --data "$DATA" >"$WORK/server.out" 2>"$WORK/server.err" &
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
code=$(curl -sS -o /dev/null -w '%{http_code}' "$BASE/healthz")
[[ $code == 200 ]] || die "GET /healthz answered $code, not 200."

# --- 5. load ---------------------------------------------------------------
# run_wrk NAME PATH [wrk header args...]: measure, keeping wrk's report in $WORK/NAME.txt.
run_wrk() {
    local name=$1 path=$2
    shift 2
    if [[ $WARMUP -gt 0 ]]; then
        say "warm-up $name (${WARMUP}s)"
        wrk -t1 -c4 -d"${WARMUP}s" "$@" "$BASE$path" >/dev/null
    fi
    say "measuring $name: wrk $WRK_ARGS $BASE$path"
    # shellcheck disable=SC2086 # WRK_ARGS is a word list on purpose
    wrk $WRK_ARGS "$@" "$BASE$path" | tee "$WORK/$name.txt" >&2
}

run_wrk healthz /healthz
run_wrk me /api/v1/me -H "Authorization: Bearer $TOKEN"

# --- 6. summary ------------------------------------------------------------
rps() { awk '/^Requests\/sec:/ {print $2}' "$WORK/$1.txt"; }
# Latency percentile from wrk's "Latency Distribution", in milliseconds.
pct() {
    awk -v p="$2%" '$1 == p {
        v = $2; n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.2f", n; exit
    }' "$WORK/$1.txt"
}
errors() { awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {n += 1} END {print n + 0}' "$WORK/$1.txt"; }

H_RPS=$(rps healthz)
M_RPS=$(rps me)
[[ -n $H_RPS && -n $M_RPS ]] || die "could not read Requests/sec from wrk's output."
RATIO=$(awk -v m="$M_RPS" -v h="$H_RPS" 'BEGIN {printf "%.2f", (h > 0 ? m / h : 0)}')
VERDICT=$(awk -v r="$RATIO" -v g="$GOAL" 'BEGIN {print (r >= g ? "PASS" : "BELOW GOAL")}')

echo
echo "berth API benchmark ($(nproc 2>/dev/null || echo '?') CPUs, wrk $WRK_ARGS, warm-up ${WARMUP}s)"
echo "  binary:  $BIN"
printf '  %-16s %10s req/s   p50 %7s ms   p99 %7s ms\n' \
    "GET /healthz" "$H_RPS" "$(pct healthz 50)" "$(pct healthz 99)" \
    "GET /api/v1/me" "$M_RPS" "$(pct me 50)" "$(pct me 99)"
echo "  token verifications: $M_RPS /s (each /api/v1/me is one bearer-token check end to end)"
echo "  ratio me/healthz: ${RATIO}x (goal at least ${GOAL}x): $VERDICT"

bad=0
for name in healthz me; do
    n=$(errors "$name")
    if [[ $n -gt 0 ]]; then
        echo "  WARNING: $name had non-2xx responses or socket errors under load; see below." >&2
        grep -E 'Non-2xx|Socket errors' "$WORK/$name.txt" >&2 || true
        bad=1
    fi
done
[[ $bad -eq 0 ]] || die "the run is not valid: requests failed under load (server log: $(tail -n 3 "$WORK/server.err" 2>/dev/null))."
