#!/usr/bin/env bash
# The benchmark: builds in release mode, then runs every case on loopback twice, through the
# real hub and clients and through examples/raw_limit.rs (the same datagrams with nothing
# on top: what the kernel allows), prints a table and writes target/bench/bench.json.
# Takes under 3 minutes; `--quick` under 30 s (scripts/test.sh runs that as a smoke test).
# Other arguments go to the bench (`--only chunked,msg` runs only those cases).
# Run it on an otherwise idle machine: the figures are rates and CPU times.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cargo build --release --bins --examples
./target/release/examples/bench "$@"
