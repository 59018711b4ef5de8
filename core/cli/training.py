"""``trainctl train``, ``run``, ``daemon`` and ``validate``: the commands that train or check data."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.daemon.work_queue import requeue_failed
from core.state import layout
from trainer.config import load_config
from trainer.model.positions import check_max_length


def cmd_train(args: argparse.Namespace) -> int:
    from core.child.torchrun import group_for_command, train_in_group
    from core.runs.job import train_file
    from trainer.distributed import is_main_process

    config_file = layout.BaseDir.at(args.base_dir).config_file
    config = load_config(config_file)
    config_text = config_file.read_text(encoding="utf-8")
    if (group := group_for_command(config)) is not None:  # distributed.nproc_per_node above 1
        return train_in_group(group, config, config_text, args.file.resolve(), args.base_dir.resolve(), args.output)
    result, model_dir = train_file(config, args.file.resolve(), args.base_dir, output=args.output,
                                   config_text=config_text)
    if is_main_process():
        print(
            f"trained {result.steps} steps on {result.examples} examples of {args.file.name}: "
            f"loss {result.first_loss:.4f} -> {result.last_loss:.4f}\nmodel: {model_dir}"
        )
    return 0


def add_train_parser(sub, parent) -> None:
    train = sub.add_parser("train", parents=[parent])
    train.add_argument("file", type=Path, help="JSONL training file")
    train.add_argument("--output", type=Path, help="model dir to write (default: runs/<time>/model)")
    train.set_defaults(func=cmd_train)


def cmd_daemon(args: argparse.Namespace) -> int:
    from core.daemon.service import serve

    return serve(args.base_dir, once=args.once, log_level=args.log_level)


def cmd_validate(args: argparse.Namespace) -> int:
    from trainer.data.validation import format_report, validate_path

    base = layout.existing_base_dir(args.base_dir)
    config = load_config(base.config_file)
    source = base.model_source(config)
    check_max_length(config, source, base.config_file)
    report = validate_path(args.file, config, source)
    print(report.model_dump_json(indent=2) if args.json else format_report(report))
    return 0 if report.usable else 1


def add_daemon_parsers(sub, parent) -> None:
    daemon = sub.add_parser("daemon", parents=[parent])
    daemon.add_argument("--once", action="store_true", help="drain the inbox, then exit")
    daemon.set_defaults(func=cmd_daemon)
    validate = sub.add_parser("validate", parents=[parent])
    validate.add_argument("file", type=Path, help="JSONL file to check")
    validate.add_argument("--json", action="store_true", help="print the full report as JSON")
    validate.set_defaults(func=cmd_validate)
    retry = sub.add_parser("retry", parents=[parent])
    retry.add_argument("name", help="file name in queue/failed/, e.g. data.jsonl")
    retry.set_defaults(func=cmd_retry)


def cmd_retry(args: argparse.Namespace) -> int:
    target = requeue_failed(layout.existing_base_dir(args.base_dir), args.name)
    print(f"{args.name}: back in {target.parent}; the daemon trains it again")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from core.child.torchrun import run_in_group
    from core.runs.runner import RunRequest, run_command

    resume = str(args.resume) if args.resume else ("none" if args.no_resume else "auto")
    request = RunRequest(args.base_dir, resume=resume, device=args.device, launch_group=run_in_group)
    for run in run_command(args.phase, args.config, request):
        record = run.record
        print(
            f"{record['phase']}: run {run.id} {record['status']} after {record.get('steps')} steps, "
            f"loss {record.get('final_loss')}, best eval loss {record.get('best_eval_loss')}\n"
            f"  model: {run.model_dir}"
        )
    return 0


def add_run_parser(sub, parent) -> None:
    run = sub.add_parser("run", parents=[parent])
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
