#!/usr/bin/env bash
# The attack benchmark of issue 11: builds in release mode, then runs each attack (and a
# no-attack baseline) for a fixed time against a fresh hub with the legitimate clients
# beside it, prints a table and writes target/bench/abuse.json. About 2 minutes;
# `--quick` (2 s per case) under 40 s, which scripts/test.sh runs as a smoke test.
# Other arguments go to the bench (`--only slowloris,poll`, `--secs 20`).
# The attackers share the machine's cores with the hub: the table marks the rows where the
# attacker itself is CPU-bound.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cargo build --release --bins --example abuse_bench
./target/release/examples/abuse_bench "$@"
