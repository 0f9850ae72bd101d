#!/usr/bin/env bash
# The MQTT benchmark of issue 15: builds in release mode, starts a private Mosquitto on a
# loopback port, and runs telemetry end to end through the hub (msg-client --stdin -> hub
# --mqtt -> broker -> mosquitto_sub) beside Mosquitto's own mosquitto_pub -l -> broker ->
# mosquitto_sub, then the hub's receive rate with --mqtt on and off; prints a table and
# writes target/bench/mqtt.json. About a minute; `--quick` under 20 s, which scripts/test.sh
# runs as a smoke test. Other arguments go to the bench (`--messages 50000`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cargo build --release --bins --example mqtt_bench
./target/release/examples/mqtt_bench "$@"
