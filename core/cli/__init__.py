"""``trainctl``: the one command-line entry point. Each subcommand is a few lines that call a module;
``core.cli.commands`` lists them, and imports only the module of the one that runs.

Every subcommand takes ``--base-dir`` (default: the current directory).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from pathlib import Path

from core.base.errors import UserError
from core.cli.commands import add_command_parsers

logger = logging.getLogger("trainctl")

DESCRIPTION = (
    "Fine-tune a language model on every JSONL file dropped into a base dir's inbox (LoRA or full "
    "fine-tune), snapshot each result and promote it to current_model; roll back any time."
)
EPILOG = (
    "first steps: trainctl init mybase; cp data.jsonl mybase/inbox/; trainctl daemon --base-dir "
    "mybase --once; trainctl snapshots list --base-dir mybase. `trainctl COMMAND --help` for each command."
)
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process ended by SIGPIPE, as `cmd | head` expects


def _base_dir_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--base-dir", type=Path, default=Path.cwd(), help="base directory (default: current directory)"
    )
    return parent


def _installed_version() -> str:
    """trainctl's version as installed, or a note that this checkout runs without being installed
    (``PYTHONPATH=. python -m core.cli``), which must not stop any command."""
    try:
        return importlib.metadata.version("trainctl")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed: running from a source checkout)"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``trainctl`` parser for ``argv`` (default: ``sys.argv[1:]``): only the command it names has
    its module imported (``core.cli.commands``)."""
    parent = _base_dir_parent()
    parser = argparse.ArgumentParser(prog="trainctl", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"trainctl {_installed_version()}")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_command_parsers(sub, parent, sys.argv[1:] if argv is None else argv)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``trainctl``; returns the process exit code."""
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args.base_dir = args.base_dir.resolve()
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
        return code
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`trainctl status | head`): stop quietly. stdout points at /dev/null
        # so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE

