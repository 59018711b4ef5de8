"""A file streams through validation and dataset building, and the child reuses what validation tokenized."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from profiles import get_profile
from tests.conftest import chat_rows, peak_bytes, text_file, write_jsonl
from trainer.config import TrainConfig
from trainer.data.dataset import build_train_data, token_count
from trainer.data.file_pass import MAX_LISTED_ROWS
from trainer.data.tokenization import TokenizeStats
from trainer.data.validation import validate_file


def test_validation_memory_does_not_grow_with_the_rows(tmp_path, tiny_tokenizer):
    config, profile = TrainConfig(), get_profile("default")
    small, large = text_file(tmp_path / "small.jsonl", 1_000), text_file(tmp_path / "large.jsonl", 10_000)
    reports = {}

    def validate(path: Path):
        return lambda: reports.__setitem__(path.name, validate_file(path, config, tiny_tokenizer, profile))

    small_peak, large_peak = peak_bytes(validate(small)), peak_bytes(validate(large))

    assert (reports["large.jsonl"].good_rows, reports["large.jsonl"].bad_rows) == (9_900, 100)
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)  # holding the rows would be about 10x


def test_building_the_dataset_streams_into_a_memory_mapped_file(tmp_path, tiny_tokenizer):
    config, profile = TrainConfig(), get_profile("default")
    small, large = text_file(tmp_path / "small.jsonl", 1_000), text_file(tmp_path / "large.jsonl", 10_000)
    built = {}

    def build(path: Path):
        return lambda: built.__setitem__(path.name, build_train_data(path, tiny_tokenizer, profile, config,
                                                                     tmp_path / "cache"))

    small_peak, large_peak = peak_bytes(build(small)), peak_bytes(build(large))

    data = built["large.jsonl"]
    assert len(data.dataset) == 9_900 and data.dataset.cache_files  # read from the Arrow file, not memory
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)


def test_tokens_are_counted_from_the_arrow_column(tmp_path, tiny_tokenizer):
    config, profile = TrainConfig(), get_profile("default")
    dataset = build_train_data(text_file(tmp_path / "rows.jsonl", 3_000), tiny_tokenizer, profile, config,
                               tmp_path / "cache").dataset
    every_third = dataset.select(range(0, len(dataset), 3))  # a selection reads through an index mapping

    for counted in (dataset, every_third, dataset.select([])):
        assert token_count(counted) == sum(len(row["input_ids"]) for row in counted)


class CountingTokenizer:
    """A real tokenizer that counts the calls which tokenize or render text."""

    def __init__(self, inner: Any):
        self._inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._inner(*args, **kwargs)

    def apply_chat_template(self, *args, **kwargs):
        self.calls += 1
        return self._inner.apply_chat_template(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def test_the_child_reuses_what_validation_tokenized(tmp_path, tiny_tokenizer):
    config, profile, cache = TrainConfig(), get_profile("default"), tmp_path / "cache"
    data_file = write_jsonl(tmp_path / "chat.jsonl", chat_rows(20) + ['{"messages": []}'])
    validating, training = CountingTokenizer(tiny_tokenizer), CountingTokenizer(tiny_tokenizer)

    report = validate_file(data_file, config, validating, profile, cache)
    data = build_train_data(data_file, training, profile, config, cache)

    assert report.usable and validating.calls > 0
    assert (data.cache_hit, training.calls) == (True, 0)
    fresh = build_train_data(data_file, tiny_tokenizer, profile, config, None)
    assert data.dataset.to_list() == fresh.dataset.to_list()
    assert data.stats == fresh.stats


def test_a_cached_validation_gives_the_same_report(tmp_path, tiny_tokenizer):
    config, profile, cache = TrainConfig(), get_profile("default"), tmp_path / "cache"
    config.hyperparams.max_length = 24  # some rows truncated: long_rows survive the cache
    data_file = write_jsonl(tmp_path / "chat.jsonl", chat_rows(20) + ["not json"])

    first = validate_file(data_file, config, tiny_tokenizer, profile, cache)
    again = validate_file(data_file, config, CountingTokenizer(tiny_tokenizer), profile, cache)

    assert first.long_rows and first.bad_lines
    assert again.model_dump(exclude={"checked_at"}) == first.model_dump(exclude={"checked_at"})


def test_bad_rows_beyond_the_listed_ones_are_counted(tmp_path, tiny_tokenizer):
    rows = chat_rows(3) + ["{broken"] * (MAX_LISTED_ROWS + 5)
    data_file = write_jsonl(tmp_path / "many_bad.jsonl", rows)

    report = validate_file(data_file, TrainConfig(), tiny_tokenizer, get_profile("default"))

    assert report.bad_rows == MAX_LISTED_ROWS + 5 and len(report.bad_lines) == MAX_LISTED_ROWS
    assert report.bad_lines[0].line == 4 and "invalid JSON" in report.bad_lines[0].reason
    assert report.usable and report.good_rows == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_length_histogram_gives_the_percentiles_of_the_sorted_lengths(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 300))]
    stats = TokenizeStats()
    for length in lengths:
        stats.length_counts[length] = stats.length_counts.get(length, 0) + 1
    ordered = sorted(lengths)

    assert stats.length_summary() == {
        "min": ordered[0], "mean": round(sum(ordered) / len(ordered), 1), "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], "max": ordered[-1],
    }
    assert TokenizeStats.from_dict(stats.to_dict()) == stats
