"""Tokenized files are cached by content: a hit skips tokenization and gives the same features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import trainer.data.dataset as dataset_module
from profiles import get_profile
from tests.conftest import chat_rows, write_jsonl
from trainer.config import parse_config
from trainer.data.dataset import build_train_data, cache_key


def _config(tiny_config: dict, **hyperparams):
    raw = json.loads(json.dumps(tiny_config))
    raw["hyperparams"].update(hyperparams)
    return parse_config(raw, Path("config.json"))


@pytest.fixture()
def data_file(tmp_path) -> Path:
    rows = chat_rows(12) + ['{"messages": "not a list"}']
    return write_jsonl(tmp_path / "chat.jsonl", rows)


def test_second_build_is_a_cache_hit_with_identical_features(tiny_config, tiny_tokenizer, data_file, tmp_path,
                                                              monkeypatch):
    config, profile, cache = _config(tiny_config), get_profile("default"), tmp_path / "cache"
    first = build_train_data(data_file, tiny_tokenizer, profile, config, cache)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("a cache hit must not tokenize")

    monkeypatch.setattr(dataset_module, "tokenize_file", no_tokenizing)
    second = build_train_data(data_file, tiny_tokenizer, profile, config, cache)

    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.dataset.to_list() == first.dataset.to_list()
    assert second.stats == first.stats
    assert len(list(cache.iterdir())) == 1


def test_cache_hit_still_reports_the_bad_rows(tiny_config, tiny_tokenizer, data_file, tmp_path, caplog):
    config, profile, cache = _config(tiny_config), get_profile("default"), tmp_path / "cache"
    build_train_data(data_file, tiny_tokenizer, profile, config, cache)
    caplog.clear()

    with caplog.at_level("WARNING", logger="trainer.data.dataset"):
        build_train_data(data_file, tiny_tokenizer, profile, config, cache)

    assert any("skipping line 13" in record.getMessage() for record in caplog.records)


def test_key_changes_with_file_content_and_tokenization_settings(tiny_config, tiny_tokenizer, data_file):
    profile = get_profile("default")
    base = cache_key(data_file, tiny_tokenizer, profile, _config(tiny_config))

    assert cache_key(data_file, tiny_tokenizer, profile, _config(tiny_config)) == base
    assert cache_key(data_file, tiny_tokenizer, profile, _config(tiny_config, max_length=64)) != base
    assert cache_key(data_file, tiny_tokenizer, profile, _config(tiny_config, learning_rate=1e-3)) == base
    write_jsonl(data_file, chat_rows(12, seed=1))
    assert cache_key(data_file, tiny_tokenizer, profile, _config(tiny_config)) != base


def test_no_cache_dir_tokenizes_every_time(tiny_config, tiny_tokenizer, data_file):
    config, profile = _config(tiny_config), get_profile("default")

    assert not build_train_data(data_file, tiny_tokenizer, profile, config, None).cache_hit
    assert not build_train_data(data_file, tiny_tokenizer, profile, config, None).cache_hit


def test_only_the_most_recent_entries_are_kept(tiny_config, tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_module, "KEEP_ENTRIES", 2)
    config, profile, cache = _config(tiny_config), get_profile("default"), tmp_path / "cache"
    for seed in range(3):
        path = write_jsonl(tmp_path / f"f{seed}.jsonl", chat_rows(4, seed=seed))
        build_train_data(path, tiny_tokenizer, profile, config, cache)

    assert len(list(cache.iterdir())) == 2
