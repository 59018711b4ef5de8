"""Mixing a phase's data files: weights give exact row counts, the sample is seeded and uniform,
and the rows stream, so memory does not grow with the files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from core.base.errors import UserError
from core.runs.phases import DataSource, LoadedPhase, PhaseConfig, mix_data
from tests.conftest import peak_bytes, text_file, write_jsonl
from trainer.config import TrainConfig


def phase(data: list[tuple[Path, float]], seed: int = 42, kind: str = "pretrain") -> LoadedPhase:
    training = TrainConfig.model_validate({"hyperparams": {"seed": seed}})
    config = PhaseConfig(phase=kind, data=[DataSource(path=str(p), weight=w) for p, w in data], training=training)
    return LoadedPhase(Path("phase.json"), "", config)


def mixed(loaded: LoadedPhase, out: Path) -> list[str]:
    _, count = mix_data(loaded, out.parent, out)
    rows = [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert count == len(rows)
    return rows


def test_a_weight_repeats_every_row_and_samples_the_fraction_in_file_order(tmp_path):
    texts = [f"row {i}" for i in range(10)]
    data = write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in texts[:5]] + [{"text": 7}]
                       + [{"text": t} for t in texts[5:]])

    rows = mixed(phase([(data, 2.5)]), tmp_path / "mixed.jsonl")

    assert rows[:20] == texts + texts  # the bad row (line 6) is skipped, as training skips it
    sample = rows[20:]
    assert len(sample) == 5 and len(set(sample)) == 5
    assert sample == sorted(sample, key=texts.index)
    assert mixed(phase([(data, 2.5)]), tmp_path / "again.jsonl") == rows
    assert len(mixed(phase([(data, 0.25)]), tmp_path / "quarter.jsonl")) == 3  # round(10 x 0.25 = 2.5) up


def test_the_sample_takes_every_row_equally_often(tmp_path):
    texts = [f"row {i}" for i in range(10)]
    data = write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in texts])
    taken = Counter()
    for seed in range(500):
        taken.update(mixed(phase([(data, 0.3)], seed=seed), tmp_path / "mixed.jsonl"))

    assert sum(taken.values()) == 1_500
    # 150 expected per row, standard deviation about 10: a biased draw (say, the first rows) fails
    assert all(100 < taken[t] < 200 for t in texts), taken


def test_a_file_of_the_wrong_kind_leaves_no_mixed_file(tmp_path):
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "a"}])
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                               {"role": "assistant", "content": "hello"}]}])
    out = tmp_path / "mixed.jsonl"

    with pytest.raises(UserError, match="chat.jsonl: .* rows in a pretrain phase"):
        mix_data(phase([(text, 1.0), (chat, 1.0)]), tmp_path, out)

    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".mixed")] == []


def test_mixing_memory_does_not_grow_with_the_files(tmp_path):
    small, large = text_file(tmp_path / "small.jsonl", 1_000), text_file(tmp_path / "large.jsonl", 10_000)
    counts = {}

    def mix(path: Path):
        return lambda: counts.__setitem__(path.name, mix_data(phase([(path, 1.5)]), tmp_path, tmp_path / "out.jsonl")[1])

    small_peak, large_peak = peak_bytes(mix(small)), peak_bytes(mix(large))

    assert counts == {"small.jsonl": 990 + 495, "large.jsonl": 9_900 + 4_950}
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)  # holding the rows would be about 10x
