#!/usr/bin/env bash
# Set up (see setup.sh), then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "test: pytest collected no tests; check the arguments or the tests/ folder" >&2
fi
exit "$status"
