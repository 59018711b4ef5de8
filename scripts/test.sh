#!/usr/bin/env bash
# Set up (see setup.sh), then run the whole test suite. Extra arguments go to pytest.
# TEST_WORKERS: parallel pytest workers (default 2; 0 runs the tests in one process).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

# The dashboard test drives Debian's headless Chromium; install it once where we may (root on CI).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "test: installing chromium and chromium-driver for the dashboard test"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
            || echo "test: could not install chromium; the dashboard test will be skipped" >&2
    else
        echo "test: chromium/chromedriver missing and not root; the dashboard test will be skipped" >&2
    fi
fi

# Two workers (pytest-xdist), each test file on one of them (module fixtures are built once), one
# PyTorch thread each so that the two share the cores instead of fighting over them: about 18
# minutes on 2 cores instead of about 28 in one process. TEST_WORKERS=0 runs in this process.
workers=${TEST_WORKERS:-2}
parallel=()
if [[ $workers != 0 ]]; then
    parallel=(-n "$workers" --dist loadfile)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
status=0
.venv/bin/python -m pytest "${parallel[@]}" "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "test: pytest collected no tests; check the arguments or the tests/ folder" >&2
fi
exit "$status"
