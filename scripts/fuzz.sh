#!/usr/bin/env bash
# Fuzz every parser a datagram reaches before it is authenticated (fuzz/, cargo-fuzz):
# `framed` (udphub::wire::framed::parse), `framed_msg` (udphub::wire::framed_msg's message
# and reply parsers), `secure_wire` (udphub::secure::wire::parse), `responder`
# (udphub::secure::session::Responder::handle_datagram) and `initiator` (what a device
# parses: udphub::secure::session::Initiator::handle_datagram), each for SECONDS
# (default 60), one after the other on the nightly toolchain. Installs cargo-fuzz if it is
# missing. Prints one line per target: executions, and whether a crash was found (its input
# is then under fuzz/artifacts/TARGET/). Exit 1 if any target found one.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECS="${1:-60}"
shift || true
if ! cargo fuzz --help >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cd fuzz
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
    mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi
mkdir -p target
failed=0
for t in "${TARGETS[@]}"; do
    log="target/fuzz-$t.log"
    # corpus/T grows between runs (not committed); seeds/T (committed) holds valid inputs
    # the fuzzer could not find by itself, e.g. a real initiation for `responder`.
    mkdir -p "corpus/$t"
    dirs=("corpus/$t")
    [[ -d "seeds/$t" ]] && dirs+=("seeds/$t")
    if nice cargo +nightly fuzz run "$t" "${dirs[@]}" -- -max_total_time="$SECS" >"$log" 2>&1; then
        runs=$(grep -oE 'Done [0-9]+ runs' "$log" | tail -1 | grep -oE '[0-9]+' || echo '?')
        echo "fuzz $t: ${runs} executions in ${SECS} s, no crash"
    else
        failed=1
        echo "fuzz $t: CRASH or build failure, see fuzz/$log:"
        grep -E 'panicked|SUMMARY|Test unit written|error' "$log" | head -5
    fi
done
exit "$failed"
