#!/usr/bin/env bash
# The loss sweep: builds in release mode, then sends the same ~66 KB 640x480 q90 frame with
# `framed` and seed `chunked` through an in-process lossy relay (0, 1, 5 and 20% loss both
# ways, fixed seed) to a fresh hub per case, and prints frames delivered (checked byte for
# byte), acked, given up, resends per frame and RTT p50/p99 as a markdown table; the same
# goes to target/bench/loss_sweep.json. Takes under two minutes.
# Arguments go to examples/loss_sweep.rs (`--frames 100`, `--losses 0,0.1`, `--seed 7`,
# `--serial`, `--out FILE`; `--help` lists them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cargo build --release --bins --examples
./target/release/examples/loss_sweep "$@"
