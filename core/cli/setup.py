"""``trainctl init``, ``status``, ``config check|schema`` and ``prepare-model``: setting up and looking at a base dir."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.base.errors import UserError
from core.state import layout, status
from trainer.config import config_to_dict, json_schema, load_config
from trainer.model.positions import check_max_length


def cmd_config_schema(args: argparse.Namespace) -> int:
    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    base = layout.existing_base_dir(args.base_dir)
    config = load_config(base.config_file)
    check_max_length(config, base.model_source(config), base.config_file)
    print(json.dumps(config_to_dict(config), indent=2))
    return 0


def add_config_parser(sub, parent) -> None:
    config = sub.add_parser("config")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    schema = config_sub.add_parser("schema", parents=[parent], help="write the JSON Schema of config.json")
    schema.add_argument("--output", "-o", type=Path, help="file to write (default: stdout)")
    schema.set_defaults(func=cmd_config_schema)
    check = config_sub.add_parser("check", parents=[parent], help="validate config.json, print it resolved")
    check.set_defaults(func=cmd_config_check)


def cmd_init(args: argparse.Namespace) -> int:
    base = layout.init_base_dir(args.dir or args.base_dir)
    print(f"base dir ready: {base.root} (config: {base.config_file})")
    try:
        print(f"model to train: {base.model_source(load_config(base.config_file))}")
    except UserError as exc:
        print(f"model to train: not ready: {exc}")
    print(f"next: copy JSONL files into {base.inbox}, then `trainctl daemon --base-dir {base.root} --once`")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    path = layout.existing_base_dir(args.base_dir).status_file
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
    init = sub.add_parser("init", parents=[parent])
    init.add_argument("dir", nargs="?", type=Path, help="base dir to create (default: --base-dir)")
    init.set_defaults(func=cmd_init)
    show = sub.add_parser("status", parents=[parent])
    show.add_argument("--json", action="store_true", help="print the raw training_status.json")
    show.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    show.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    show.set_defaults(func=cmd_status)


def cmd_prepare_model(args: argparse.Namespace) -> int:
    # Imported here: the conversion pulls in torch and transformers, which other commands skip.
    from trainer.model.embedded import prepare_model

    print(f"embedded model ready: {prepare_model(force=args.force)}")
    return 0


def add_prepare_model_parser(sub, parent) -> None:
    prepare = sub.add_parser("prepare-model", parents=[parent])
    prepare.add_argument("--force", action="store_true", help="convert again even if it is present")
    prepare.set_defaults(func=cmd_prepare_model)
