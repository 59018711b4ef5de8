"""A file tokenized in worker processes, a part each, gives exactly what one pass gives: the same
features in the same order, the same statistics and bad rows, the same first error; a worker that
dies costs time, not the file."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

import trainer.data.file_pass as file_pass
from profiles import get_profile
from profiles.emoji_think import EmojiThinkProfile
from tests.conftest import chat_rows
from trainer.config import TrainConfig
from trainer.data.dataset import load_features
from trainer.data.file_pass import tokenize_file, worker_count
from trainer.data.tokenization import ChatTemplateError


def messy_chat_file(path: Path, rows: int) -> Path:
    """Chat rows with what a real file has: a byte-order mark on a bad first line, blank lines, bad
    JSON, rows of another format, rows the profile refuses, no newline at the end."""
    lines = ["\ufeffnot json", ""]
    for i, row in enumerate(chat_rows(rows)):
        lines.append(json.dumps(row))
        if i % 7 == 3:
            lines.append('{"text": "a text row in a chat file"}')
        if i % 11 == 5:
            lines += ["", "{broken"]
        if i % 13 == 8:
            lines.append(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "<think>only</think>"}]}))
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def passes(data_file: Path, tokenizer, profile, workers: int, folder: Path):
    config = TrainConfig.model_validate({"data": {"tokenize_workers": workers}, "hyperparams": {"max_length": 40}})
    found = tokenize_file(data_file, tokenizer, profile, config, folder)
    features = load_features(folder)
    return found.to_dict(), features["input_ids"], features["labels"]


def test_workers_give_the_features_statistics_and_bad_rows_of_one_pass(tmp_path, tiny_tokenizer, monkeypatch,
                                                                       caplog):
    monkeypatch.setattr(file_pass, "MIN_LINES_PER_WORKER", 10)
    data_file = messy_chat_file(tmp_path / "chat.jsonl", 120)
    profile = EmojiThinkProfile()  # decorates a reply by its index in the file, and refuses some rows
    caplog.set_level(logging.INFO, logger="trainer.data.file_pass")

    one = passes(data_file, tiny_tokenizer, profile, 1, tmp_path / "one")
    three = passes(data_file, tiny_tokenizer, profile, 3, tmp_path / "three")

    assert "chat.jsonl: tokenizing in 3 processes" in caplog.text and "failed" not in caplog.text
    assert len(list((tmp_path / "three").glob("features-*.arrow"))) == 3
    assert three == one
    stats = one[0]
    assert stats["bad_rows"] == 1 + 17 + 11 + 9 and stats["good_rows"] == 120  # every kind of bad row
    assert stats["stats"]["truncated"] > 0 and stats["format"] == "chat"


def test_the_earliest_failing_row_is_the_error_whatever_part_it_is_in(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(file_pass, "MIN_LINES_PER_WORKER", 10)
    tokenizer = tiny_tokenizer
    tokenizer.chat_template = ("{% for message in messages %}{% if 'boom' in message['content'] %}"
                               "{{ raise_exception('no boom here') }}{% endif %}{% endfor %}" + tokenizer.chat_template)
    rows = chat_rows(60)
    for i in (37, 52):  # both in later parts; 37 comes first
        rows[i]["messages"][1]["content"] = "boom"
    data_file = tmp_path / "chat.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    errors = []
    for workers in (1, 3):
        with pytest.raises(ChatTemplateError) as caught:
            passes(data_file, tokenizer, get_profile("default"), workers, tmp_path / str(workers))
        errors.append(str(caught.value))

    assert errors[0] == errors[1] and "line 38" in errors[0] and "no boom here" in errors[0]


class DiesInAWorker(EmojiThinkProfile):
    """A profile whose worker process dies, as one killed for memory would."""

    def transform_example(self, example, index):
        if multiprocessing.parent_process() is not None:
            os._exit(9)
        return super().transform_example(example, index)


def test_a_worker_that_dies_costs_time_not_the_file(tmp_path, tiny_tokenizer, monkeypatch, caplog):
    monkeypatch.setattr(file_pass, "MIN_LINES_PER_WORKER", 10)
    data_file = messy_chat_file(tmp_path / "chat.jsonl", 40)

    one = passes(data_file, tiny_tokenizer, EmojiThinkProfile(), 1, tmp_path / "one")
    with caplog.at_level(logging.WARNING, logger="trainer.data.file_pass"):
        fallen_back = passes(data_file, tiny_tokenizer, DiesInAWorker(), 2, tmp_path / "two")

    assert "tokenizing in 2 processes failed (BrokenProcessPool" in caplog.text
    assert fallen_back == one
    assert [p.name for p in (tmp_path / "two").glob("features-*.arrow")] == ["features-00000.arrow"]


def test_small_files_and_a_setting_of_one_start_no_worker(tmp_path, monkeypatch):
    data_file = tmp_path / "rows.jsonl"
    data_file.write_text("{}\n" * 25_000)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))

    assert worker_count("auto", data_file) == 2  # 10,000 lines a worker at least
    assert worker_count(1, data_file) == 1
    data_file.write_text("{}\n" * 19_999)
    assert worker_count("auto", data_file) == 1
    data_file.write_text("{}\n" * 1_000_000)
    assert worker_count("auto", data_file) == file_pass.MAX_AUTO_WORKERS
    assert worker_count(12, data_file) == 12


def test_a_worker_imports_no_torch():
    """What a worker imports to tokenize (the pass and every profile) leaves torch out: 7.6 s of
    imports a worker with torch, 2.6 s without, on the 2-core test machine."""
    code = ("import sys, pickle, trainer.data.file_pass, profiles; "
            "pickle.loads(pickle.dumps(profiles.get_profile('emoji_think'))); "
            "print(sorted(m for m in ('torch', 'peft', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert out.strip() == "[]"
