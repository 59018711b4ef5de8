"""Remembering a promoted file offers its training rows to replay one at a time."""

from __future__ import annotations

from pathlib import Path

from core.memory.buffers import ReplayBuffer
from core.memory.promoted import remember_promoted
from core.state.layout import init_base_dir
from tests.conftest import peak_bytes, text_file
from trainer.config import TrainConfig


def test_a_promoted_files_rows_reach_the_replay_reservoir_without_being_held_together(tmp_path):
    config = TrainConfig.model_validate({"replay": {"max_rows": 50}})
    snapshot = tmp_path / "snapshot"  # without heldout.json: no row was held out
    snapshot.mkdir()
    layouts = {}

    def remember(path: Path) -> None:
        layout = layouts[path.name] = init_base_dir(tmp_path / path.stem)
        remember_promoted(layout, snapshot, path, path.name, f"sha-{path.stem}", config)

    small, large = text_file(tmp_path / "small.jsonl", 1_000), text_file(tmp_path / "large.jsonl", 10_000)
    small_peak, large_peak = peak_bytes(lambda: remember(small)), peak_bytes(lambda: remember(large))

    rows = ReplayBuffer(layouts["large.jsonl"].memory).rows()
    assert len(rows) == 50 and all(row.line % 100 and row.example["text"] for row in rows)  # good rows only
    assert len({row.line for row in rows}) == 50
    assert max(row.line for row in rows) > 1_000  # a reservoir over the whole file, not its start
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)  # holding every row: about 10x
