"""The kernel benchmark times ours and the stock kernel for attention (per length and over a file's
example lengths) and for the loss; the speeds themselves are never asserted."""

from __future__ import annotations

import re

from benchmarks import kernels
from tests.conftest import chat_rows, write_jsonl


def test_it_prints_both_kernels_per_length_and_the_sum_over_a_files_examples(tmp_path, capsys, tiny_model_dir):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(6))

    kernels.main(["attention", "--model", str(tiny_model_dir), "--data", str(data), "--lengths", "7", "130",
                  "--repeats", "1"])

    out = capsys.readouterr().out
    rows = re.findall(r"^\s*(\d+) tokens: flash +[\d.]+ ms, blocks +[\d.]+ ms, [\d.]+x$", out, re.MULTILINE)
    assert rows == ["7", "130"]
    assert re.search(r"chat\.jsonl \(6 examples, one layer\): flash [\d.]+ s, blocks up to \d+ tokens [\d.]+ s", out)


def test_it_prints_both_losses_per_position_count_with_and_without_the_backward(capsys, tiny_model_dir):
    kernels.main(["loss", "--model", str(tiny_model_dir), "--positions", "3", "40", "--repeats", "1"])

    out = capsys.readouterr().out
    rows = re.findall(r"^\s*(\d+) positions, (forward(?: \+ backward)?): fp32 copy +[\d.]+ ms, chunked +[\d.]+ ms",
                      out, re.MULTILINE)
    assert rows == [("3", "forward + backward"), ("3", "forward"), ("40", "forward + backward"), ("40", "forward")]
