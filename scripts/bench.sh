#!/usr/bin/env bash
# The benchmark: builds in release mode, then runs every case on loopback twice, through the
# real hub and clients and through examples/raw_limit.rs (the same datagrams with nothing
# on top: what the kernel allows), prints a table and writes target/bench/bench.json.
# The `-keys` cases (issue 12) run framed with `hub --key --authorized-keys` and
# `img-client --key --hub-key` beside the same case without keys, and a second table gives
# their ratios to it (keys are made by udphub-keygen in a temporary directory).
# Takes under 4 minutes on an idle machine; `--quick` under 30 s (scripts/test.sh runs that
# as a smoke test; of the -keys cases it runs only framed-1400-w1-keys).
# Other arguments go to the bench (`--only chunked,msg` runs only those cases, `--only keys`
# only the -keys ones).
# Run it on an otherwise idle machine: the figures are rates and CPU times.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cargo build --release --bins --examples
./target/release/examples/bench "$@"
