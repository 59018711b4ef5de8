"""How the snapshot commands report a ``SnapshotError``: one line on stderr, exit code 1."""

from __future__ import annotations

import argparse
import sys

from core.snapshots.store import SnapshotError


def snapshot_errors_exit_1(func):
    """Run a command; a ``SnapshotError`` is printed and exits 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except SnapshotError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run
