#!/usr/bin/env bash
# Check that .cargo/hot-functions.txt is current: the linker can place only the
# functions whose names it finds, and a code, dependency or toolchain change renames
# many (symbol names carry hashes, closures are numbered). The list still pays:
# idle server + share 12.0 MiB with a current list, 14.9 MiB without one, 14.0 MiB
# with a list two refactors old (December 2026, tokio share).
#
# Usage: scripts/check-hot-functions.sh   (builds the release and static binaries
#                                          when they are out of date)
#
# Fails, naming the fix, when fewer than MIN_PERCENT (default 95) of the list's
# names are symbols of the release or the static binary: run
# scripts/hot-functions.sh and commit the list it writes.
set -euo pipefail

MIN_PERCENT=${MIN_PERCENT:-95}

SCRIPT=check-hot-functions
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need nm "install binutils (e.g. apt-get install -y binutils)."
LIST=$ROOT/.cargo/hot-functions.txt
[[ -s $LIST ]] || die "$LIST is missing; run scripts/hot-functions.sh to write it."

berth_bin release
build_static
workdir berth-check-hot-functions
{ nm "$BIN"; nm "$STATIC_BIN"; } | awk '{print $NF}' | sort -u >"$WORK/symbols"
sort -u "$LIST" >"$WORK/list"
total=$(wc -l <"$WORK/list")
found=$(comm -12 "$WORK/list" "$WORK/symbols" | wc -l)
percent=$((100 * found / total))
echo "hot functions: $found of the list's $total names are in the binaries ($percent%, at least $MIN_PERCENT% wanted)"
[[ $percent -ge $MIN_PERCENT ]] ||
    die "the list is stale; run scripts/hot-functions.sh (needs valgrind) and commit .cargo/hot-functions.txt."
