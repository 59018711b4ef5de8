"""``core.cli.commands``: a command imports only its own module, so the light ones never load torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.cli import build_parser
from core.cli.commands import COMMANDS
from core.state.layout import init_base_dir

HEAVY = ("torch", "transformers", "peft", "datasets")

# Runs trainctl in a fresh interpreter, then prints which heavy libraries it imported.
_PROBE = """
import sys
from core.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("imported:", ",".join(name for name in {heavy!r} if name in sys.modules))
"""


def _imported(*argv: str) -> str:
    probe = _PROBE.format(heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["status"],
    ["snapshots", "list"],
    ["rollback", "--help"],
    ["http-token"],
    ["retry", "--help"],
])
def test_light_commands_import_no_torch(tmp_path, argv):
    base = init_base_dir(tmp_path / "base")
    with_base = [*argv, "--base-dir", str(base.root)] if "--help" not in argv else argv
    assert _imported(*with_base) == "imported:"


def test_the_probe_sees_a_heavy_command_import_torch():
    assert "torch" in _imported("chat", "--help")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_gets_its_real_parser(name):
    """The table names each command's module and adder right: its parser has more than ``-h``."""
    sub = next(action for action in build_parser([name])._actions if action.dest == "command")
    assert len(sub.choices[name]._actions) > 1


def test_help_lists_every_command_with_its_line(capsys):
    with pytest.raises(SystemExit):
        build_parser(["--help"]).parse_args(["--help"])
    listing = " ".join(capsys.readouterr().out.split())
    for name, command in COMMANDS.items():
        assert f"{name} {command.help}" in listing
