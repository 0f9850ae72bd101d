#!/usr/bin/env bash
# Makes target/pyvenv (a Python virtual environment of the project's own) and installs the
# udphub Python package (clients/python, with its `image` extra: numpy, OpenCV) into it, plus
# any packages named as arguments (`bash scripts/pyvenv.sh pytest`). Used by scripts/test.sh
# (the package's tests) and scripts/link_bench.sh (the seed senders). When python3 has pip,
# the venv is made without a copy of it (ensurepip alone takes ~10 s) and python3's pip
# installs into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYVENV=target/pyvenv
if python3 -m pip --version >/dev/null 2>&1; then
    [[ -x "$PYVENV/bin/python" ]] || python3 -m venv --without-pip "$PYVENV"
    PIP=(python3 -m pip --python "$PYVENV/bin/python")
else
    [[ -x "$PYVENV/bin/pip" ]] || python3 -m venv "$PYVENV"
    PIP=("$PYVENV/bin/python" -m pip)
fi
"${PIP[@]}" install --disable-pip-version-check -q --no-compile "./clients/python[image]" "$@"
