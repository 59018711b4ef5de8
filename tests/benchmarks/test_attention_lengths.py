"""The attention benchmark times both kernels per length and over a file's example lengths; the
speeds themselves are never asserted."""

from __future__ import annotations

import re

from benchmarks import attention_lengths
from tests.conftest import chat_rows, write_jsonl


def test_it_prints_both_kernels_per_length_and_the_sum_over_a_files_examples(tmp_path, capsys, tiny_model_dir):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(6))

    attention_lengths.main(["--model", str(tiny_model_dir), "--data", str(data), "--lengths", "7", "130",
                            "--repeats", "1"])

    out = capsys.readouterr().out
    rows = re.findall(r"^\s*(\d+) tokens: flash +[\d.]+ ms, blocks +[\d.]+ ms, [\d.]+x$", out, re.MULTILINE)
    assert rows == ["7", "130"]
    assert re.search(r"chat\.jsonl \(6 examples, one layer\): flash [\d.]+ s, blocks up to \d+ tokens [\d.]+ s", out)
