#!/usr/bin/env bash
# Make the repo ready to run: .venv/ with the project installed, and the embedded base model in the
# models home ($TRAINCTL_HOME/models, else this repo's models/ if it exists, else
# ~/.local/share/trainctl/models), shared by every base dir. Safe to run again: pip is skipped while
# pyproject.toml and this script are unchanged.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP="$VENV/.trainctl-setup-stamp"
# An unpinned torch pulls gigabytes of CUDA wheels; this pin is served as a CPU wheel.
TORCH_REQUIREMENT="torch==2.13.0"

find_python() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$candidate"
            return 0
        fi
    done
    echo "setup: need Python >= 3.11 as python3.11 or python3 on PATH" >&2
    return 1
}

if [[ ! -x "$VENV/bin/python" ]]; then
    python=$(find_python)
    echo "setup: creating $VENV with $python"
    "$python" -m venv "$VENV" || {
        echo "setup: '$python -m venv' failed; install the venv module (Debian: apt install python3-venv)" >&2
        exit 1
    }
fi

wanted=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$STAMP" 2>/dev/null)" != "$wanted" ]]; then
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    if [[ "${CI:-}" == "true" ]]; then
        export PIP_PROGRESS_BAR=off
    fi
    echo "setup: installing $TORCH_REQUIREMENT and the project into $VENV"
    "$VENV/bin/python" -m pip install "$TORCH_REQUIREMENT"
    "$VENV/bin/python" -m pip install -e ".[test]" --config-settings editable_mode=compat
    echo "$wanted" > "$STAMP"
else
    echo "setup: $VENV is up to date"
fi

"$VENV/bin/trainctl" prepare-model
