#!/usr/bin/env bash
# Crash the daemon again and again for DURATION (e.g. 90s, 10m, 1h) while it trains a small inbox on
# a tiny model, and check that no file is lost or trained twice and that every snapshot equals an
# uninterrupted run's (tests/reliability/soak.py). Not part of CI; the tests run a ~20-kill round.
# Prints one summary line; exits 1 if anything was lost, duplicated or broken. Extra arguments go
# to the driver (--seed N, --workdir DIR to keep the rounds, --log FILE for one line per kill).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: scripts/soak.sh DURATION [--seed N] [--workdir DIR] [--log FILE]" >&2
    exit 2
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh >/dev/null
duration=$1
shift
exec .venv/bin/python -m tests.reliability.soak --duration "$duration" "$@"
