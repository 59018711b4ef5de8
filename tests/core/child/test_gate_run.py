"""The gate's side of the training child reads the file one row at a time: its memory does not grow with it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from core.child.gate_run import GateRun
from core.state.layout import init_base_dir
from tests.conftest import peak_bytes, text_file
from trainer.config import TrainConfig
from trainer.data.eval_sets import heldout_indices


def test_picking_the_heldout_rows_holds_one_row_at_a_time(tmp_path):
    layout = init_base_dir(tmp_path / "base")
    config = TrainConfig()
    runs, heldout = {}, {}

    def read(path: Path) -> None:
        run = runs[path.name] = GateRun(layout, config, path, model_source="model")
        good = {"small.jsonl": 990, "large.jsonl": 9_900}[path.name]  # every 100th row of text_file is bad
        job = SimpleNamespace(eval_dataset=[], data_stats=SimpleNamespace(long_rows=[]), file_examples=good)
        heldout[path.name] = run._heldout_rows(job)

    small, large = text_file(tmp_path / "small.jsonl", 1_000), text_file(tmp_path / "large.jsonl", 10_000)
    small_peak, large_peak = peak_bytes(lambda: read(small)), peak_bytes(lambda: read(large))

    good_lines = [line for line in range(1, 10_001) if line % 100]
    wanted = [good_lines[i] for i in heldout_indices(len(good_lines), config)]
    assert [row.line for row in heldout["large.jsonl"]] == wanted
    assert all(row.example["text"] for row in heldout["large.jsonl"])
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)  # holding every row: about 10x
