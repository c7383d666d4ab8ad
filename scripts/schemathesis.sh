#!/usr/bin/env bash
# Fuzz a real berth server with schemathesis, driven by the server's own
# GET /api/v1/openapi.json, and fail on any 5xx (check: not_a_server_error).
#
# Usage: scripts/schemathesis.sh
#
# Environment:
#   BERTH_BIN       use this berth binary instead of building target/debug/berth
#   MAX_EXAMPLES    examples per operation and phase (default 30)
#   TIME_LIMIT      hard bound on the schemathesis run, in seconds (default 600)
#   SEED            schemathesis seed (default: random; printed for reproduction)
#   SCHEMATHESIS    a schemathesis executable; else one on PATH; else one installed
#                   with pip into a venv at $SCHEMATHESIS_VENV
#                   (default ${TMPDIR:-/tmp}/berth-schemathesis-venv)
#
# Exit status: 0 when no operation got a 5xx, non-zero otherwise or when the run
# itself cannot start.
set -euo pipefail

MAX_EXAMPLES=${MAX_EXAMPLES:-30}
TIME_LIMIT=${TIME_LIMIT:-600}
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
VENV=${SCHEMATHESIS_VENV:-${TMPDIR:-/tmp}/berth-schemathesis-venv}

SCRIPT=schemathesis.sh
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need curl "install it (apt-get install -y curl)."
need python3 "install it (apt-get install -y python3 python3-venv)."

# --- 1. schemathesis -------------------------------------------------------
if [[ -n ${SCHEMATHESIS:-} ]]; then
    ST=$SCHEMATHESIS
elif command -v schemathesis >/dev/null 2>&1; then
    ST=$(command -v schemathesis)
else
    ST=$VENV/bin/schemathesis
    if [[ ! -x $ST ]]; then
        say "installing schemathesis into $VENV (pip)"
        python3 -m venv "$VENV" || die "could not create a venv; install python3-venv."
        "$VENV/bin/pip" install -q schemathesis >&2 || die "pip install schemathesis failed."
    fi
fi
say "using $("$ST" --version)"

# --- 2. the binary ---------------------------------------------------------
berth_bin debug

# --- 3. the server ---------------------------------------------------------
workdir berth-schemathesis
DATA=$WORK/data
server_log() {
    if [[ -s $WORK/server.err ]]; then
        say "server stderr:"
        tail -n 20 "$WORK/server.err" >&2
    fi
}
ON_FAILURE=server_log
start_server server "$DATA"
say "server at $BASE (data $DATA)"

# --- 4. a user and a token -------------------------------------------------
create_user "$DATA" fuzz
# Fuzzed ids are mostly small: spare tokens take them, so a fuzzed DELETE rarely
# revokes the token the run itself uses.
for i in $(seq 20); do mint_token "$BASE" fuzz "$PASSWORD" "spare $i" >/dev/null; done
TOKEN=$(mint_token "$BASE" fuzz "$PASSWORD" fuzz)

# --- 5. fuzz ---------------------------------------------------------------
say "schemathesis: max $MAX_EXAMPLES examples, seed $SEED, at most ${TIME_LIMIT}s"
start=$(date +%s)
# schemathesis keeps a cache in its working directory: keep it out of the repo.
cd "$WORK"
set +e
timeout --signal=INT --kill-after=10 "$TIME_LIMIT" "$ST" run "$BASE/api/v1/openapi.json" \
    --checks not_a_server_error \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 2 \
    --no-color \
    -H "Authorization: Bearer $TOKEN"
status=$?
set -e
elapsed=$(($(date +%s) - start))
if [[ $status -eq 124 || $status -eq 130 ]]; then
    die "schemathesis did not finish within ${TIME_LIMIT}s; lower MAX_EXAMPLES or raise TIME_LIMIT."
fi
kill -0 "$SERVER_PID" 2>/dev/null || die "the server died during the run."
if grep -q panicked "$WORK/server.err"; then
    die "the server panicked during the run (see its stderr above)."
fi
[[ $status -eq 0 ]] || die "schemathesis found failures (exit $status, seed $SEED) after ${elapsed}s."
say "no 5xx: schemathesis passed in ${elapsed}s (seed $SEED)"
