#!/usr/bin/env bash
# Installs the system packages udphub needs to build and test (OpenCV headers for the
# `opencv` crate, clang/libclang for its binding generator, Xvfb for optional headless
# window tests, libjpeg62-turbo-dev for the libjpeg reference timing of the JPEG walk
# (testkit), chromium for the browser test of the hub's web page, python3-venv for the
# virtual environment of the Python package's tests, mosquitto for the MQTT tests, which
# start brokers of their own on loopback ports, never the system service, iproute2 for
# the link benchmark's network namespaces and tbf). Idempotent: does nothing when
# everything is already there.
set -euo pipefail

packages=(libopencv-dev libjpeg62-turbo-dev clang libclang-dev g++ pkg-config xvfb xauth python3 python3-venv chromium mosquitto mosquitto-clients iproute2)

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup.sh: cargo not found; install a Rust toolchain (https://rustup.rs) and retry" >&2
    exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "setup.sh: all system packages present (${packages[*]})"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "setup.sh: missing packages: ${missing[*]}" >&2
    echo "setup.sh: run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

echo "setup.sh: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup.sh: installed ${missing[*]}"
