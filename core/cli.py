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
from trainer.config import CONFIG_FILENAME, ConfigError, config_to_dict, json_schema, load_config

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


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parent = _base_dir_parent()
    parser = argparse.ArgumentParser(prog="trainctl", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_config_parser(sub, parent)
    add_init_status_parsers(sub, parent)
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
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
