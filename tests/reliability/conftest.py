"""Fixtures of the fault-injection tests: the uninterrupted run to compare with, a trained base dir."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.daemon.loop import Outcome, TrainingDaemon
from core.state.layout import BaseDir
from tests.conftest import write_jsonl
from tests.reliability.fork_server import ForkServer
from tests.reliability.harness import daemon_config, make_base_dir
from tests.reliability.soak import Reference, inbox_files, run_reference


@pytest.fixture(scope="session")
def fork_server() -> Iterator[ForkServer]:
    """Forks daemons without paying their imports again (see ``fork_server``)."""
    server = ForkServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def reference(tiny_model_dir, tmp_path_factory, fork_server) -> Reference:
    """The kill loop's inbox trained by one daemon run without faults (outcomes, snapshot weights)."""
    return run_reference(tmp_path_factory.mktemp("reference") / "base", tiny_model_dir, fork_server)


@pytest.fixture(scope="session")
def trained(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A base dir whose current_model is alpha.jsonl's adapter, and its private copy of the tiny model.

    Copy the base dir before changing it (the ``layout`` fixture does). The model copy may be
    changed only if it is restored at once.
    """
    root = tmp_path_factory.mktemp("trained")
    model = Path(shutil.copytree(tiny_model_dir, root / "model"))
    layout = make_base_dir(root / "base", daemon_config(model))
    write_jsonl(layout.inbox / "alpha.jsonl", inbox_files()["alpha.jsonl"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TB_AUTO", "0")
        assert TrainingDaemon(layout.root).run_once() is Outcome.TRAINED
    return layout.root, model


@pytest.fixture()
def layout(trained, tmp_path, monkeypatch) -> BaseDir:
    """A private copy of the trained base dir (current_model is a relative link, so it copies)."""
    monkeypatch.setenv("TB_AUTO", "0")
    return BaseDir.at(shutil.copytree(trained[0], tmp_path / "base", symlinks=True))

