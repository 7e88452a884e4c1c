#!/usr/bin/env bash
# Run the test suite: set up .venv, make sure an X server (Xvfb) exists for napari's
# OpenGL canvas, check the import layers (lint-imports), then run pytest. Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

# napari draws with OpenGL and needs an X server; QT_QPA_PLATFORM=offscreen is not enough.
# pytest-xvfb starts Xvfb when it is installed. Qt 6's xcb plugin needs these libraries.
if ! command -v Xvfb >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing Xvfb and the X libraries Qt 6 needs"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            xvfb xauth libx11-xcb1 libxcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 \
            libxcb-keysyms1 libxcb-randr0 libxcb-render0 libxcb-render-util0 libxcb-shape0 \
            libxcb-shm0 libxcb-sync1 libxcb-util1 libxcb-xfixes0 libxcb-xkb1 libxkbcommon0 \
            libxkbcommon-x11-0 libgl1 libegl1 libgl1-mesa-dri libfontconfig1 libdbus-1-3 \
            >/dev/null
    else
        echo "test.sh: WARNING: Xvfb is not installed and cannot be installed here (needs root" \
             "and apt-get); napari viewer tests will fail. Install Xvfb, e.g." \
             "'sudo apt-get install xvfb'." >&2
    fi
fi

# The architecture first (fast, and a layering mistake is best seen before 4 minutes of
# tests): who may import whom, as [tool.importlinter] in pyproject.toml declares it — the
# core never imports napari, Qt or the widgets; io imports neither prediction nor training;
# no cycles inside io.
.venv/bin/lint-imports
# Types of the core ([tool.mypy] in pyproject.toml) and lint ([tool.ruff]).
.venv/bin/mypy
.venv/bin/ruff check src tests benchmarks scripts

# A full run (no arguments, as CI's) also checks the packaging: the wheel builds, installs
# into a fresh venv with only its [pyqt6] extra, and napari finds the plugin
# (scripts/check_wheel.sh). It is mostly pip waiting on files, so it runs beside pytest
# rather than before it; its log is printed once both are done.
wheel_pid=
if [[ $# -eq 0 ]]; then
    wheel_log=$(mktemp)
    bash scripts/check_wheel.sh >"$wheel_log" 2>&1 &
    wheel_pid=$!
fi
status=0
.venv/bin/python -m pytest -q "$@" || status=$?
if [[ -n $wheel_pid ]]; then
    wheel_status=0
    wait "$wheel_pid" || wheel_status=$?
    grep -v "is ignored: it is neither a file nor a directory" "$wheel_log" || true
    rm -f "$wheel_log"
    if [[ $wheel_status -ne 0 ]]; then
        echo "test.sh: the packaging check (scripts/check_wheel.sh) failed" >&2
        status=$wheel_status
    fi
fi
exit "$status"
