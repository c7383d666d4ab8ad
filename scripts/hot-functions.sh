#!/usr/bin/env bash
# Regenerate .cargo/hot-functions.txt: the functions an idle server and an idle
# `berth share` run, which the release build's linker places together (build.rs).
#
# Why: an idle process keeps resident every 64 KiB block of the binary it touched
# once (the kernel maps file pages around each fault), and the code a server or a
# client runs is scattered through all of it. Laid out in one run, the code these
# processes run fills far fewer blocks (scripts/bench-relay.sh, "idle RSS").
#
# How: a server and share run under valgrind's callgrind through what
# scripts/bench-relay.sh does before it measures idle memory (start, a sign-in that
# mints a token, a tunnel, requests on kept-alive and fresh connections, an unknown
# host, a ping period of idle), then stop. scripts/hot-functions.py lists every
# function either ran: share's alone first, then both's, then the server's alone,
# so each process's code is one run. That is done for the release binary and then
# for the static one of the Dockerfile, whose symbol names differ; the list holds
# both. Regenerate after a toolchain or dependency upgrade (symbol names carry
# hashes of both); a stale list costs memory, never correctness.
#
# Usage: scripts/hot-functions.sh   (about two minutes after the release and static
#                                    builds, which it makes when they are out of date)
#
# Environment:
#   IDLE   seconds the tunnel stays idle before the processes stop (default 25,
#          more than one ping period)
set -euo pipefail

IDLE=${IDLE:-25}

SCRIPT=hot-functions
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need valgrind "install it (e.g. apt-get install -y valgrind)."
need curl "install it (e.g. apt-get install -y curl)."
need python3 "install it (e.g. apt-get install -y python3)."
OUT=$ROOT/.cargo/hot-functions.txt
workdir berth-hot-functions

# The origin: 1 KiB answers on kept-alive connections.
python3 -c '
import http.server, socketserver
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1024")
        self.end_headers()
        self.wfile.write(b"x" * 1024)
    def log_message(self, *args):
        pass
server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
' >"$WORK/origin.out" &
track "$!"
ORIGIN_PORT=$(await_line "$WORK/origin.out" 1p "$!")
[[ -n $ORIGIN_PORT ]] || die "the origin did not report its port."

# profile NAME BINARY: the scenario with BINARY's server and share under callgrind;
# their profiles go to $WORK/NAME/callgrind.{server,share}.
profile() {
    local name=$1 real=$2 dir=$WORK/$1 url host round
    mkdir -p "$dir"
    # berth under callgrind for `server` and `share`; other commands run plain.
    cat >"$dir/berth" <<EOF
#!/bin/sh
case "\$1" in
server | share)
    exec valgrind -q --tool=callgrind --demangle=no --compress-strings=no \\
        --callgrind-out-file="$dir/callgrind.\$1" "$real" "\$@" ;;
esac
exec "$real" "\$@"
EOF
    chmod +x "$dir/berth"
    BIN=$dir/berth
    say "$name: server and share under callgrind (slow)"
    START_WAIT=60 server_with_token "$name-server" "${LOAD_FLAGS[@]}"
    start_share "$name-share" "$BASE" "$TOKEN" "$ORIGIN_PORT" --host 127.0.0.1
    url=$(await_line "$WORK/$name-share.out" "$FORWARDING" "$SHARE_PID" 60)
    [[ -n $url ]] || die "share did not open a tunnel: $(cat "$WORK/$name-share.err")"
    host=${url#http://}
    say "$name: requests through the tunnel, then ${IDLE}s idle"
    for round in 1 2 3; do
        # Three on one kept-alive connection, then one on a fresh connection.
        curl -sS -o /dev/null -o /dev/null -o /dev/null -H "Host: $host" \
            "$BASE/a$round" "$BASE/b$round" "$BASE/c$round" || die "a request through the tunnel failed."
        curl -sS -o /dev/null -H "Host: $host" "$BASE/fresh$round" || die "a request through the tunnel failed."
        sleep 1
    done
    curl -sS -o /dev/null -H "Host: nobody.$host" "$BASE/" || true
    sleep "$IDLE"
    say "$name: stopping share and server (callgrind writes its profiles)"
    # SIGTERM, since a script's background jobs ignore SIGINT.
    kill -TERM "$SHARE_PID" 2>/dev/null || true
    wait "$SHARE_PID" || true
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" || true
    for f in share server; do
        [[ -s $dir/callgrind.$f ]] || die "callgrind wrote no profile for $name's $f."
    done
}

berth_bin release
RELEASE_BIN=$BIN
profile release "$RELEASE_BIN"
build_static
profile static "$STATIC_BIN"

python3 "$ROOT/scripts/hot-functions.py" "$RELEASE_BIN" "$WORK/release" \
    "$STATIC_BIN" "$WORK/static" >"$WORK/hot-functions.txt"
mv "$WORK/hot-functions.txt" "$OUT"
say "wrote $OUT ($(wc -l <"$OUT") functions); rebuild with cargo build --release"
