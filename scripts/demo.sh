#!/usr/bin/env bash
# Demo: the hub plus both clients on this machine, for DEMO_SECONDS seconds (default 10).
#
#   scripts/demo.sh [OUT_DIR]
#
# Builds the release binaries, starts the hub on 127.0.0.1 with OS-chosen ports (fixed
# ports could be taken), streams the test pattern with img-client and telemetry with
# msg-client, then stops everything and prints the clients' and the hub's summaries and
# where the saved frames and the message log are. Output goes to OUT_DIR (default
# target/demo under the repository, cleared first; a given OUT_DIR only has the demo's own
# files replaced). Exits non-zero if no frame was saved or the message log is empty.
# Runs from any directory; Ctrl-C stops everything it started.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
seconds="${DEMO_SECONDS:-10}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -lt 1 ]]; then
    echo "demo.sh: DEMO_SECONDS must be a whole number of seconds >= 1, got '$seconds'" >&2
    exit 2
fi

bash scripts/setup.sh
cargo build --release --bins
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
[[ "$target_dir" = /* ]] || target_dir="$repo/$target_dir"
bin="$target_dir/release"

if [[ $# -ge 1 ]]; then
    out="$1"
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    rm -rf "$out/frames" "$out/messages.jsonl" "$out"/hub.* "$out"/img-client.* "$out"/msg-client.*
else
    out="$repo/target/demo"
    rm -rf "$out"
fi
mkdir -p "$out/frames"

hub_pid="" img_pid="" msg_pid="" sleep_pid=""

# Stop the processes this script started (by PID), waiting at most ~5 s for each.
stop_pid() {
    local pid="$1" signal="$2" i
    [[ -n "$pid" ]] || return 0
    kill "-$signal" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "demo.sh: process $pid did not stop after SIG$signal; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    stop_pid "$sleep_pid" TERM
    stop_pid "$img_pid" INT
    stop_pid "$msg_pid" INT
    stop_pid "$hub_pid" INT
}
trap cleanup EXIT
trap 'echo "demo.sh: interrupted" >&2; exit 130' INT TERM

# The web view on a fixed, memorable address (DEMO_HTTP overrides it, e.g. 127.0.0.1:0).
http="${DEMO_HTTP:-127.0.0.1:8080}"
"$bin/hub" --bind 127.0.0.1 --img-port 0 --msg-port 0 --tcp-port 0 --http "$http" \
    --save-dir "$out/frames" --msg-log "$out/messages.jsonl" \
    >"$out/hub.out" 2>"$out/hub.err" &
hub_pid=$!

# Bounded wait for the hub's "hub: ready" line.
for ((i = 0; i < 300; i++)); do
    grep -qx "hub: ready" "$out/hub.out" 2>/dev/null && break
    if ! kill -0 "$hub_pid" 2>/dev/null; then
        echo "demo.sh: the hub exited before it was ready:" >&2
        cat "$out/hub.out" "$out/hub.err" >&2
        exit 1
    fi
    sleep 0.1
done
if ! grep -qx "hub: ready" "$out/hub.out"; then
    echo "demo.sh: the hub did not get ready within 30 s:" >&2
    cat "$out/hub.out" "$out/hub.err" >&2
    exit 1
fi
img_addr="$(awk '$1 == "hub:" && $2 == "img" && $3 == "listening" { print $NF }' "$out/hub.out")"
msg_addr="$(awk '$1 == "hub:" && $2 == "msg" && $3 == "listening" { print $NF }' "$out/hub.out")"
http_url="$(awk '$1 == "hub:" && $2 == "http" && $3 == "listening" { print $NF }' "$out/hub.out")"
echo "demo.sh: hub (pid $hub_pid) images on udp $img_addr, messages on udp $msg_addr"
echo "demo.sh: watch it live in a browser: $http_url/"
echo "demo.sh: streaming the test pattern and telemetry for $seconds s..."

"$bin/img-client" --pattern --fps 15 --hub "$img_addr" \
    >"$out/img-client.out" 2>"$out/img-client.err" &
img_pid=$!
"$bin/msg-client" --hub "$msg_addr" --interval-ms 100 \
    --data '{"device": "demo", "temp_c": 21.5, "battery": 0.87}' \
    >"$out/msg-client.out" 2>"$out/msg-client.err" &
msg_pid=$!

# In the background and waited for, so a signal to this script is handled at once.
sleep "$seconds" &
sleep_pid=$!
wait "$sleep_pid" || true
sleep_pid=""

# Ctrl-C the clients (they print their summaries), then the hub (it drains its save queue).
img_status=0 msg_status=0 hub_status=0
stop_pid "$img_pid" INT
wait "$img_pid" || img_status=$?
img_pid=""
stop_pid "$msg_pid" INT
wait "$msg_pid" || msg_status=$?
msg_pid=""
stop_pid "$hub_pid" INT
wait "$hub_pid" || hub_status=$?
hub_pid=""

echo
cat "$out/img-client.out"
echo "  (exit status $img_status; status lines in $out/img-client.err)"
echo
cat "$out/msg-client.out"
echo "  (exit status $msg_status; status lines in $out/msg-client.err)"
echo
sed -n '/^hub: summary/,$p' "$out/hub.out"
echo "  (exit status $hub_status; log in $out/hub.err)"
echo

frames=$(find "$out/frames" -name '*.jpg' | wc -l)
lines=0
[[ -f "$out/messages.jsonl" ]] && lines=$(wc -l <"$out/messages.jsonl")
echo "demo.sh: $frames frames saved in $out/frames"
echo "demo.sh: $lines messages logged in $out/messages.jsonl"

if [[ "$frames" -eq 0 || "$lines" -eq 0 ]]; then
    echo "demo.sh: FAILED: no frames saved or no messages logged" >&2
    exit 1
fi
