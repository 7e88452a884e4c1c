#!/usr/bin/env bash
# Create .venv in the repository root and install napari-unet (editable) with the
# PyQt6 and testing extras. Idempotent: the pip step is skipped while pyproject.toml and
# constraints.txt are unchanged since the last successful install (stamp file).
# constraints.txt pins the CPU torch build; see the comment there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        echo "setup.sh: napari-unet needs Python >= 3.10; set PYTHON=/path/to/python3.x" >&2
        exit 1
    fi
    echo "setup.sh: creating .venv with $("$python" --version)"
    "$python" -m venv .venv
fi

stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" ]]; then
    echo "setup.sh: installing napari-unet into .venv (torch first, CPU build)"
    .venv/bin/python -m pip install -q -c constraints.txt torch==2.13.0
    # Before the rename to napari-interactive-unet this checkout was installed as
    # "napari-unet"; that stale install (or the unrelated napari-unet from PyPI) would
    # register the plugin twice and clash on the import name napari_unet.
    if .venv/bin/python -m pip show -q napari-unet >/dev/null 2>&1; then
        .venv/bin/python -m pip uninstall -q -y napari-unet
    fi
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[all,testing]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
