#!/usr/bin/env bash
# The project's full check: system packages, formatting, lints, then every test.
# CI runs this through .ci/run; developers can run it directly from any directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Tests that open OpenCV windows run only where a display exists. Without one (CI, ssh),
# run the tests under a virtual X display so those tests run too.
XVFB=""
if [[ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]] && command -v xvfb-run >/dev/null 2>&1; then
    XVFB="xvfb-run -a"
fi

bash scripts/setup.sh

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The library without OpenCV and the CLI crates (what a Pi sending its camera's MJPEG
# builds): it must build and lint clean on its own.
cargo build -p udphub --no-default-features --lib
cargo clippy -p udphub --no-default-features --lib -- -D warnings
# img-client without OpenCV (`--mjpeg` is its source), in a target dir of its own so it does
# not replace the full build's binary; the MJPEG end-to-end tests run once more with it below.
NOCV_TARGET="$(realpath -m "${CARGO_TARGET_DIR:-target}")/nocv"
cargo build -p udphub --no-default-features --features cli --bin img-client --target-dir "$NOCV_TARGET"
cargo clippy -p udphub --no-default-features --features cli --bins --target-dir "$NOCV_TARGET" -- -D warnings
# The API docs: every link resolves, every public item of udphub::api documented.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

if cargo nextest --version >/dev/null 2>&1; then
    cargo test --doc   # nextest does not run doctests; run them first so the summary below is last
    $XVFB cargo nextest run
    UDPHUB_IMG_CLIENT_BIN="$NOCV_TARGET/debug/img-client" cargo nextest run --test mjpeg
else
    $XVFB cargo test   # doctests included
    UDPHUB_IMG_CLIENT_BIN="$NOCV_TARGET/debug/img-client" cargo test --test mjpeg
fi

# The Python package (clients/python) against the hub just built, in a virtual environment
# of its own: pip installs the package with its `image` extra (numpy, OpenCV) and pytest.
cargo build --bin hub
HUB_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/hub"
bash scripts/pyvenv.sh pytest
PYVENV=target/pyvenv
UDPHUB_HUB_BIN="$HUB_BIN" "$PYVENV/bin/python" -m pytest -q -p no:cacheprovider clients/python/tests

# Smoke run of the benchmark: that it runs and writes its JSON, not how fast anything is.
rm -f target/bench/bench.json && bash scripts/bench.sh --quick && python3 -c 'import json; json.load(open("target/bench/bench.json"))'
# The same for the attack benchmark (under 40 s).
rm -f target/bench/abuse.json && bash scripts/abuse_bench.sh --quick && python3 -c 'import json; json.load(open("target/bench/abuse.json"))'
# And the MQTT benchmark (under 20 s; it fails if the hub path lost or duplicated a message).
rm -f target/bench/mqtt.json && bash scripts/mqtt_bench.sh --quick && python3 -c 'import json; json.load(open("target/bench/mqtt.json"))'
# And the narrow-link benchmark (one case, two senders, under 30 s; it fails on a corrupt frame).
rm -f target/bench/link.json && bash scripts/link_bench.sh --quick && python3 -c 'import json; json.load(open("target/bench/link.json"))'

if [[ -f target/browser/SCREENSHOT_PATH ]]; then
    echo "test.sh: the browser test's screenshot of the hub page: $(cat target/browser/SCREENSHOT_PATH)"
fi
echo "test.sh: all checks passed"
