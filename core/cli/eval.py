"""``trainctl eval`` (a snapshot's losses on the gate's sets or given files) and the work of
``trainctl snapshots promote`` (judge a kept snapshot, then promote it; its parser: ``core.cli.snapshots``)."""

from __future__ import annotations

import argparse
import json
import sys

from core.cli.errors import snapshot_errors_exit_1
from core.snapshots.gate import Verdict, format_eval_table
from core.snapshots.measure import gate_sets, measure_sets, table
from core.snapshots.promotion import promote_kept
from core.snapshots.store import SnapshotError, SnapshotStore
from core.state import layout
from core.state.events import EventLog, EventType
from trainer.config import load_config
from trainer.set_losses import LossMeter

CURRENT = "current"


def cmd_eval(args: argparse.Namespace) -> int:
    """The losses of a snapshot (or ``current``) on ``--data`` files, or on every gate set."""
    base = layout.existing_base_dir(args.base_dir)
    config = load_config(base.config_file)
    store = SnapshotStore(base)
    snapshot = store.current() if args.snapshot == CURRENT else store.resolve(args.snapshot)
    if snapshot is None:
        raise SnapshotError("current_model is not set yet; name a snapshot (`trainctl snapshots list`)")
    meter = LossMeter(snapshot.path, config, base.root)
    sets, problems = gate_sets(base, config, meter.tokenizer, snapshot, args.data or [])
    rows = table(sets, measure_sets(meter, sets))
    left_out = [{"path": p.path, "reason": p.reason} for p in problems]
    if args.json:
        print(json.dumps({"snapshot": snapshot.id, "sets": rows, "left_out": left_out}, indent=2))
        return 0
    print(f"snapshot {snapshot.id}")
    print(format_eval_table([{**row, "loss_before": None} for row in rows]))
    for problem in left_out:
        print(f"left out {problem['path']}: {problem['reason']}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Judge a kept snapshot against the current model (unless ``--force``), then promote it."""
    base = layout.existing_base_dir(args.base_dir)
    config = load_config(base.config_file)
    before = SnapshotStore(base).current()
    snapshot, decision = promote_kept(base, config, args.id, args.force)
    if decision is not None:
        print(format_eval_table(decision.table))
    if decision is not None and decision.verdict is Verdict.REJECTED:
        print(f"not promoted: {decision.rule}; current_model is unchanged. Use --force to promote it anyway",
              file=sys.stderr)
        return 1
    EventLog(base.events_file).emit(EventType.SNAPSHOT_PROMOTED, file=snapshot.source_file, snapshot=snapshot.id,
                                    forced=args.force, by="trainctl snapshots promote")
    print(f"current_model -> {snapshot.id} (was {before.id if before else 'none'})"
          + (" (gate skipped: --force)" if args.force else ""))
    return 0


def add_eval_parser(sub, parent) -> None:
    """``trainctl eval [SNAPSHOT|current] [--data FILE...] [--json]``."""
    evaluate = sub.add_parser("eval", parents=[parent])
    evaluate.add_argument("snapshot", nargs="?", default=CURRENT,
                          help="snapshot id, unique id prefix, or 'current' (default)")
    evaluate.add_argument("--data", nargs="+", metavar="FILE",
                          help="JSONL files to measure (default: its held-out rows, eval/*.jsonl, the memory set)")
    evaluate.add_argument("--json", action="store_true", help="print the table as JSON")
    evaluate.set_defaults(func=snapshot_errors_exit_1(cmd_eval))
