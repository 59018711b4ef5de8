"""The ``trainctl`` command table: which module defines each command, imported only when it runs.

The commands that train, measure, chat or export need torch and transformers, whose import takes
seconds on a CPU box (5 s of ``trainctl status``'s 5 s, before this table); ``status``, ``snapshots
list`` or ``--help`` need neither. So the parser imports just the module of the command it is given,
and lists the others by their help line. A sub-command of a light group whose work is heavy (``snapshots
promote``) names its handler here as a module and a function (``deferred``). This is the one place
where the CLI imports lazily; the modules it names import what they need at their top.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One ``trainctl`` command: its module, the function there that adds its parser, its help line."""

    module: str
    adder: str  # adds this command's parser, and those of the other commands of its group
    help: str


_SETUP, _TRAINING, _SNAPSHOTS, _HTTP = "core.cli.setup", "core.cli.training", "core.cli.snapshots", "core.cli.http"

# The members of a group (one adder) are listed together: the adder runs at the first of them.
COMMANDS: dict[str, Command] = {
    "config": Command(_SETUP, "add_config_parser", "inspect config.json and its schema"),
    "train": Command(_TRAINING, "add_train_parser", "train the current model (or base_model) on one JSONL file"),
    "run": Command(_TRAINING, "add_run_parser",
                   "train a phase (pretrain, sft) or a pipeline from a configs/ file"),
    "prepare-model": Command(_SETUP, "add_prepare_model_parser",
                             "convert the embedded SmolLM2-135M-Instruct once into the models home, for every base dir"),
    "init": Command(_SETUP, "add_init_status_parsers", "create the base dir and a default config.json"),
    "status": Command(_SETUP, "add_init_status_parsers", "show what the daemon is doing"),
    "snapshots": Command(_SNAPSHOTS, "add_snapshot_parsers", "list, pin, unpin and promote model snapshots"),
    "rollback": Command(_SNAPSHOTS, "add_snapshot_parsers", "point current_model at an earlier snapshot"),
    "eval": Command("core.cli.eval", "add_eval_parser",
                    "a snapshot's losses on the promotion gate's sets, or on given files"),
    "daemon": Command(_TRAINING, "add_daemon_parsers", "train every file dropped into the inbox"),
    "validate": Command(_TRAINING, "add_daemon_parsers", "check a JSONL file as the daemon would, without training"),
    "retry": Command(_TRAINING, "add_daemon_parsers",
                     "move a failed file back into the inbox (its stale report is deleted)"),
    "chat": Command("core.cli.chat", "add_chat_parser", "talk to the current model or a snapshot"),
    "export": Command("core.cli.export", "add_export_parser",
                      "write a snapshot as a merged safetensors model or a GGUF file for serving"),
    "serve": Command(_HTTP, "add_http_parsers",
                     "serve the dashboard and a read-only API for a base dir, without a daemon"),
    "http-token": Command(_HTTP, "add_http_parsers", "print the bearer token of the HTTP API"),
}


def add_command_parsers(sub, parent: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Add every command to ``sub``: the full parsers of the group of the command named in ``argv``
    (the first word that is a command), and for every other command a bare parser with its help
    line, which is all ``trainctl --help`` shows of it."""
    chosen = COMMANDS.get(next((word for word in argv if word in COMMANDS), ""))
    for name, command in COMMANDS.items():
        if name in sub.choices:
            continue
        if chosen is not None and (command.module, command.adder) == (chosen.module, chosen.adder):
            getattr(importlib.import_module(command.module), command.adder)(sub, parent)
        else:
            sub.add_parser(name, help=command.help)


def deferred(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """A command handler that imports ``module`` when it runs, then calls its ``function``."""

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), function)(args)

    return run
