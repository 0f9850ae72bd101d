#!/usr/bin/env bash
# The narrow-link benchmark of issue 13: builds in release mode, makes the Python venv with
# the udphub package (the seed senders), and runs examples/link_bench.rs: live 640x480 q90
# video through an 8/3/50 Mbit/s link (network namespaces + `tc tbf` as root; otherwise
# udp-relay's own rate limit on loopback, which it says), with udp-relay adding delay and
# loss, for img-client adaptive (also with --fec off where there is loss) and fixed, the
# Python seed chunked and TCP senders and img-client --protocol tcp. Prints a table and
# writes target/bench/link.json. About 6 minutes; `--quick` (one case, two senders, under 30 s) is what scripts/test.sh runs as a
# smoke test. Other arguments go to the bench (`--cases 8M-40ms-2%,step --senders adaptive`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bash scripts/pyvenv.sh
cargo build --release --bins --example link_bench
./target/release/examples/link_bench "$@"
