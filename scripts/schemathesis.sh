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

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MAX_EXAMPLES=${MAX_EXAMPLES:-30}
TIME_LIMIT=${TIME_LIMIT:-600}
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
VENV=${SCHEMATHESIS_VENV:-${TMPDIR:-/tmp}/berth-schemathesis-venv}

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'schemathesis.sh: %s\n' "$*" >&2
    exit 1
}
command -v curl >/dev/null 2>&1 || die "curl is required; install it (apt-get install -y curl)."
command -v python3 >/dev/null 2>&1 || die "python3 is required (apt-get install -y python3 python3-venv)."

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
if [[ -n ${BERTH_BIN:-} ]]; then
    [[ -x $BERTH_BIN ]] || die "BERTH_BIN=$BERTH_BIN is not an executable file."
    BIN=$BERTH_BIN
else
    say "building berth (cargo build)"
    (cd "$ROOT" && cargo build --quiet)
    BIN=$ROOT/target/debug/berth
fi

# --- 3. the server ---------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-schemathesis.XXXXXX")
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
    if [[ $status -ne 0 && -s $WORK/server.err ]]; then
        say "server stderr:"
        tail -n 20 "$WORK/server.err" >&2
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$BIN" server --listen 127.0.0.1:0 --data "$DATA" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
ADDR=
for _ in $(seq 100); do
    ADDR=$(sed -n 's/^berth listening on http:\/\/\([^ ]*\) .*/\1/p' "$WORK/server.out" | head -n1)
    [[ -n $ADDR ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
[[ -n $ADDR ]] || die "the server did not report its address."
BASE=http://$ADDR
say "server at $BASE (data $DATA)"

# --- 4. a user and a token -------------------------------------------------
PASSWORD=fuzz-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$PASSWORD" |
    "$BIN" admin create-user fuzz --crew fuzz --role owner --password-stdin --data "$DATA" >&2 ||
    die "could not create the fuzz user."
mint() {
    curl -sS --fail-with-body -u "fuzz:$PASSWORD" -X POST "$BASE/api/v1/tokens" \
        -H 'Content-Type: application/json' -d "{\"name\":\"$1\"}"
}
# Fuzzed ids are mostly small: spare tokens take them, so a fuzzed DELETE rarely
# revokes the token the run itself uses.
for i in $(seq 20); do mint "spare $i" >/dev/null || die "could not mint a spare token."; done
REPLY=$(mint fuzz) || die "could not mint a token: $REPLY"
TOKEN=$(printf '%s' "$REPLY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
[[ -n $TOKEN ]] || die "no secret in the token reply: $REPLY"

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
