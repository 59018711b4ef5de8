"""``trainctl``: the one command-line entry point. Each subcommand is a few lines that call a module.

Every subcommand takes ``--base-dir`` (default: the current directory).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.base.errors import UserError
from core.cli.setup import add_config_parser, add_init_status_parsers, add_prepare_model_parser
from core.cli.snapshots import add_snapshot_parsers
from core.cli.training import add_daemon_parsers, add_run_parser, add_train_parser

logger = logging.getLogger("trainctl")


def _base_dir_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--base-dir", type=Path, default=Path.cwd(), help="base directory (default: current directory)"
    )
    return parent


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

