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

WRK_ARGS=${WRK_ARGS:--t2 -c32 -d10s --latency}
WARMUP=${WARMUP:-2}
GOAL=${GOAL:-0.5}

SCRIPT=bench-api
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wrk_latency
need curl "install it (e.g. apt-get install -y curl)."

# --- 1. the binary ---------------------------------------------------------
berth_bin release

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
workdir berth-bench
DATA=$WORK/data
say "starting berth server (data $DATA)"
start_server server "$DATA" "${LOAD_FLAGS[@]}"
say "server listening on $BASE"

# --- 4. a user and a token -------------------------------------------------
create_user "$DATA" bench
TOKEN=$(mint_token "$BASE" bench "$PASSWORD" bench)

code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/me")
[[ $code == 200 ]] || die "GET /api/v1/me with the new token answered $code, not 200."
code=$(curl -sS -o /dev/null -w '%{http_code}' "$BASE/healthz")
[[ $code == 200 ]] || die "GET /healthz answered $code, not 200."

# --- 5. load ---------------------------------------------------------------
run_wrk healthz "$BASE/healthz"
run_wrk me "$BASE/api/v1/me" -H "Authorization: Bearer $TOKEN"

# --- 6. summary ------------------------------------------------------------
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
