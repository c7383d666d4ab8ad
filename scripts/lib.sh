# shellcheck shell=bash disable=SC2034 # it sets variables for the scripts that source it
# What scripts/*.sh share: messages, the berth binary, a temp dir whose processes
# stop on exit, a server on a free port, a user with a token, and wrk's report.
#
# Source it after setting SCRIPT (the name error messages start with):
#   SCRIPT=bench-api
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '%s: %s\n' "$SCRIPT" "$*" >&2
    exit 1
}
# need TOOL HINT: stop with HINT (what to install) unless TOOL is on PATH.
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required; $2"; }

# berth_bin [release|debug]: sets BIN to $BERTH_BIN, or builds that profile once.
berth_bin() {
    local profile=${1:-release}
    if [[ -n ${BERTH_BIN:-} ]]; then
        [[ -x $BERTH_BIN ]] || die "BERTH_BIN=$BERTH_BIN is not an executable file."
        BIN=$BERTH_BIN
        say "using BERTH_BIN=$BIN (not building)"
        return
    fi
    need cargo "install Rust (https://rustup.rs) or set BERTH_BIN to a built berth."
    if [[ $profile == release ]]; then
        say "building the release binary (cargo build --release)"
        (cd "$ROOT" && cargo build --release --quiet)
    else
        say "building berth (cargo build)"
        (cd "$ROOT" && cargo build --quiet)
    fi
    BIN=$ROOT/target/$profile/berth
}

# The static binary of the Dockerfile: glibc linked in (crt-static) for this machine.
# getrandom 0.3 finds glibc's getrandom() with dlsym, which a static binary cannot
# answer, and falls back to /dev/urandom; with this cfg it calls getrandom() directly,
# so the binary needs no /dev at all.
STATIC_TARGET=$(uname -m)-unknown-linux-gnu
STATIC_RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"'

# build_static: build it; sets STATIC_BIN. --target keeps RUSTFLAGS off build scripts
# and proc macros, which must stay dynamic.
build_static() {
    need cargo "install Rust (https://rustup.rs)."
    say "building: RUSTFLAGS='$STATIC_RUSTFLAGS' cargo build --release --target $STATIC_TARGET"
    (cd "$ROOT" && RUSTFLAGS=$STATIC_RUSTFLAGS \
        cargo build --release --locked --target "$STATIC_TARGET" --quiet)
    STATIC_BIN=$ROOT/target/$STATIC_TARGET/release/berth
}

# wrk_latency: WRK_ARGS gets --latency unless it has it, since p50/p99 come from it.
wrk_latency() {
    case " $WRK_ARGS " in
    *" --latency "* | *" -L "*) ;;
    *) WRK_ARGS="$WRK_ARGS --latency" ;;
    esac
}

# --- a temp dir and the processes that live in it ----------------------------
PIDS=()
# ON_FAILURE: a command cleanup runs (with $WORK still there) when the script fails.
ON_FAILURE=

# workdir NAME: sets WORK to a fresh temp dir; on exit the tracked processes stop
# (newest first, so clients go before their server) and the dir is removed.
workdir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# track PID: stop PID on exit.
track() { PIDS+=("$1"); }

# stop PID: SIGTERM, up to 5 s to exit, then SIGKILL.
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
    local status=$? i
    if [[ $status -ne 0 && -n $ON_FAILURE ]]; then $ON_FAILURE || true; fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop "${PIDS[i]}"; done
    rm -rf "$WORK"
    exit "$status"
}

# await_line FILE SED PID [SECONDS]: prints the first match of the sed -n script SED
# in FILE, waiting up to SECONDS (default 10) while PID lives; prints nothing if none
# comes.
await_line() {
    local file=$1 expr=$2 pid=$3 tries=$((${4:-10} * 10)) line
    for _ in $(seq "$tries"); do
        line=$(sed -n "$expr" "$file" 2>/dev/null | head -n1)
        if [[ -n $line ]]; then
            printf '%s\n' "$line"
            return
        fi
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}

# The line a server prints once it listens, as a sed script printing host:port.
LISTENING='s/^berth listening on http:\/\/\([^ ]*\) .*/\1/p'
# The line share prints once its HTTP tunnel is open, as a sed script printing the URL.
FORWARDING='s/^Forwarding \([^ ]*\) .*/\1/p'
# The benchmarks' load comes from one address (wrk -c64, parallel curls and TCP
# connections, a thousand idle tunnels): flags that lift the server's cap per
# client address, which would otherwise turn part of the load into 429s.
LOAD_FLAGS=(--max-connections-per-ip 100000)

# Seconds start_server waits for the server to listen.
START_WAIT=${START_WAIT:-10}

# start_server NAME DATA [ARGS...]: `berth server` on a free loopback port with its
# data in DATA and output in $WORK/NAME.out/.err; sets SERVER_PID, ADDR and BASE.
start_server() {
    local name=$1 data=$2
    shift 2
    "$BIN" server --listen 127.0.0.1:0 --data "$data" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    SERVER_PID=$!
    track "$SERVER_PID"
    ADDR=$(await_line "$WORK/$name.out" "$LISTENING" "$SERVER_PID" "$START_WAIT")
    if [[ -z $ADDR ]]; then
        cat "$WORK/$name.out" "$WORK/$name.err" >&2 || true
        die "berth server ($name) did not report its address."
    fi
    BASE=http://$ADDR
}

# --- a user and a token ------------------------------------------------------
# create_user DATA USER: a user who owns crew USER, on a random password; sets PASSWORD.
create_user() {
    PASSWORD=$2-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    printf '%s\n' "$PASSWORD" |
        "$BIN" admin create-user "$2" --crew "$2" --role owner --password-stdin --data "$1" >&2 ||
        die "could not create the $2 user."
}

# mint_token BASE USER PASSWORD NAME: a new token for USER on the server at BASE;
# prints its secret.
mint_token() {
    local reply secret
    reply=$(curl -sS --fail-with-body -u "$2:$3" -X POST "$1/api/v1/tokens" \
        -H 'Content-Type: application/json' -d "{\"name\":\"$4\"}") ||
        die "could not mint a token: $reply"
    if command -v python3 >/dev/null 2>&1; then
        secret=$(printf '%s' "$reply" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
    else
        secret=$(printf '%s' "$reply" | sed -n 's/.*"secret":"\([^"]*\)".*/\1/p')
    fi
    [[ -n $secret ]] || die "no secret in the token reply: $reply"
    printf '%s\n' "$secret"
}

# server_with_token NAME [ARGS...]: a server (with ARGS) on data dir $WORK/NAME
# with a user and a token; sets ADDR, BASE, SERVER_PID and TOKEN.
server_with_token() {
    start_server "$1" "$WORK/$1" "${@:2}"
    create_user "$WORK/$1" bench
    TOKEN=$(mint_token "$BASE" bench "$PASSWORD" bench)
}

# start_share NAME BASE TOKEN ARGS...: `berth share ARGS` against the server at BASE
# with TOKEN and no config file, output in $WORK/NAME.out/.err; sets SHARE_PID.
start_share() {
    local name=$1 base=$2 token=$3
    shift 3
    BERTH_CONFIG=$WORK/none.json BERTH_SERVER=$base BERTH_TOKEN=$token \
        "$BIN" share "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    SHARE_PID=$!
    track "$SHARE_PID"
}

# --- wrk ---------------------------------------------------------------------
# run_wrk NAME URL [wrk args...]: a warm-up of WARMUP s, then WRK_ARGS, keeping wrk's
# report in $WORK/NAME.txt and, in $WORK/NAME.cpu, the CPU seconds that wrk and each
# process of CPU_PIDS (a space-separated list) used while it measured: "wrk S", "PID S".
run_wrk() {
    local name=$1 url=$2
    shift 2
    if [[ $WARMUP -gt 0 ]]; then
        say "warm-up $name (${WARMUP}s)"
        wrk -t1 -c4 -d"${WARMUP}s" "$@" "$url" >/dev/null
    fi
    # Not "$@": headers may carry the token.
    say "measuring $name: wrk $WRK_ARGS $url"
    cpu_seconds "$WORK/$name.before"
    # shellcheck disable=SC2086 # WRK_ARGS is a word list on purpose
    wrk $WRK_ARGS "$@" "$url" | tee "$WORK/$name.txt" >&2
    cpu_seconds "$WORK/$name.after"
    paste "$WORK/$name.before" "$WORK/$name.after" |
        awk '{printf "%s %.3f\n", $1, $4 - $2}' >"$WORK/$name.cpu"
}

# cpu_seconds FILE: writes "wrk S" (user + system CPU seconds of this shell's
# finished children, which includes wrk once run_wrk has waited for it) and "PID S"
# for each of CPU_PIDS.
cpu_seconds() {
    local pid
    stat_seconds wrk 14 "$$" >"$1"
    for pid in ${CPU_PIDS:-}; do stat_seconds "$pid" 12 "$pid" >>"$1"; done
}
# stat_seconds LABEL FIELD PID: "LABEL S", S the CPU seconds of fields FIELD and
# FIELD+1 of /proc/PID/stat, counted after the command name (which may hold spaces):
# 12 and 13 are the process's user and system time, 14 and 15 its children's.
stat_seconds() {
    awk -v tck="$(getconf CLK_TCK)" -v who="$1" -v f="$2" \
        '{sub(/^.*\) /, ""); printf "%s %.3f\n", who, ($f + $(f + 1)) / tck}' "/proc/$3/stat"
}
# cpu_per_request NAME WHO...: microseconds of CPU per request that the processes
# WHO (PIDs of CPU_PIDS, or wrk) used together during run NAME.
cpu_per_request() {
    local name=$1
    shift
    awk -v who=" $* " -v n="$(awk '/ requests in / {print $1}' "$WORK/$name.txt")" '
        index(who, " " $1 " ") {s += $2}
        END {printf "%.1f", (n > 0 ? s * 1e6 / n : 0)}' "$WORK/$name.cpu"
}
# rps NAME: requests per second of run NAME.
rps() { awk '/^Requests\/sec:/ {print $2}' "$WORK/$1.txt"; }
# pct NAME P: latency percentile P of run NAME from wrk's "Latency Distribution", in ms.
pct() {
    awk -v p="$2%" '$1 == p {
        v = $2; n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.2f", n; exit
    }' "$WORK/$1.txt"
}
# errors NAME: non-2xx responses plus socket-error lines of run NAME.
errors() { awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {n += 1} END {print n + 0}' "$WORK/$1.txt"; }
