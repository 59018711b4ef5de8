"""``trainctl snapshots list|pin|unpin|promote`` and ``rollback``."""

from __future__ import annotations

import argparse

from core.cli.commands import deferred
from core.cli.errors import snapshot_errors_exit_1
from core.snapshots.rollback import rollback_recorded
from core.snapshots.store import SnapshotStore, format_snapshot_table
from core.state import layout

# Promoting measures the snapshot (torch), which listing, pinning and rolling back do not need.
_promote = deferred("core.cli.eval", "cmd_promote")


def cmd_snapshots(args: argparse.Namespace) -> int:
    store = SnapshotStore(layout.existing_base_dir(args.base_dir))
    if args.snapshots_command == "list":
        print(format_snapshot_table(store.list()))
        return 0
    if args.snapshots_command == "promote":
        return _promote(args)
    info = store.pin(args.id) if args.snapshots_command == "pin" else store.unpin(args.id)
    print(f"{info.id}: {'pinned' if info.pinned else 'not pinned'}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    before, after = rollback_recorded(layout.existing_base_dir(args.base_dir), args.snapshot, deep=args.deep)
    print(f"current_model -> {after.id} (was {before.id if before else 'none'})")
    return 0


def add_snapshot_parsers(sub, parent) -> None:
    snaps = sub.add_parser("snapshots")
    snaps_sub = snaps.add_subparsers(dest="snapshots_command", required=True)
    snaps_sub.add_parser("list", parents=[parent], help="table of snapshots, * marks the current one")
    for name, text in (("pin", "keep a snapshot when old ones are pruned"), ("unpin", "undo pin")):
        pin = snaps_sub.add_parser(name, parents=[parent], help=text)
        pin.add_argument("id", help="snapshot id or unique id prefix")
    promote = snaps_sub.add_parser("promote", parents=[parent],
                                   help="judge a kept (e.g. rejected) snapshot with the gate, then promote it")
    promote.add_argument("id", help="snapshot id or unique id prefix")
    promote.add_argument("--force", action="store_true", help="skip the gate and promote it anyway")
    snaps.set_defaults(func=snapshot_errors_exit_1(cmd_snapshots))
    rollback = sub.add_parser("rollback", parents=[parent])
    rollback.add_argument("snapshot", help="snapshot id, unique id prefix, or 'previous'")
    rollback.add_argument("--deep", action="store_true",
                          help="read and hash every file again instead of comparing size, times and inode")
    rollback.set_defaults(func=snapshot_errors_exit_1(cmd_rollback))
