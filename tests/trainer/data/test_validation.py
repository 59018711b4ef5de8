"""Validation reports: bad lines with numbers, token statistics, the on_bad_row policy."""

from __future__ import annotations

import json

import pytest

from core.base.hashing import sha256_file
from core.cli import main
from profiles import get_profile
from tests.conftest import chat_rows, write_jsonl
from trainer.config import parse_config
from trainer.data.validation import Verdict, estimate_steps, validate_file


def _config(tiny_config: dict, **sections):
    raw = json.loads(json.dumps(tiny_config))
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return parse_config(raw, path=None)


def _validate(path, tiny_config, tiny_tokenizer, **sections):
    return validate_file(path, _config(tiny_config, **sections), tiny_tokenizer, get_profile("default"))


def test_good_file_is_usable_with_lengths_and_step_estimate(tmp_path, tiny_config, tiny_tokenizer):
    path = write_jsonl(tmp_path / "good.jsonl", chat_rows(10))

    report = _validate(path, tiny_config, tiny_tokenizer)

    assert report.usable and report.verdict is Verdict.ACCEPTED and report.problems == []
    assert (report.file, report.sha256, report.format) == ("good.jsonl", sha256_file(path), "chat")
    assert (report.total_lines, report.good_rows, report.bad_rows, report.trained_rows) == (10, 10, 0, 10)
    assert report.trained_share == 1.0 and report.trained_tokens > 0
    lengths = report.token_lengths
    assert 0 < lengths.min <= lengths.p50 <= lengths.p95 <= lengths.max <= 128
    assert lengths.min <= lengths.mean <= lengths.max
    assert report.estimate.steps == 3  # 10 examples, batch 4, 1 epoch
    assert json.loads(report.model_dump_json())["verdict"] == "accepted"


def test_bad_lines_are_listed_and_skipped(tmp_path, tiny_config, tiny_tokenizer):
    rows = chat_rows(4)
    rows[1:1] = ["{not json", {"messages": [{"role": "user", "content": "no reply"}]}]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)

    report = _validate(path, tiny_config, tiny_tokenizer)

    assert report.usable and report.verdict is Verdict.SKIPPING_BAD_ROWS
    assert (report.good_rows, report.bad_rows, report.trained_rows) == (4, 2, 4)
    assert [row.line for row in report.bad_lines] == [2, 3]
    assert "invalid JSON" in report.bad_lines[0].reason
    assert "no assistant message" in report.bad_lines[1].reason


def test_reject_policy_fails_a_file_with_any_bad_row(tmp_path, tiny_config, tiny_tokenizer):
    path = write_jsonl(tmp_path / "mixed.jsonl", chat_rows(4) + ["[1, 2]"])

    report = _validate(path, tiny_config, tiny_tokenizer, data={"on_bad_row": "reject"})

    assert not report.usable and report.verdict is Verdict.REJECTED
    assert report.policy == "reject"
    assert "on_bad_row is 'reject'" in report.problems[0]


def test_file_without_a_good_line_is_rejected(tmp_path, tiny_config, tiny_tokenizer):
    path = write_jsonl(tmp_path / "bad.jsonl", ["nope", "{}", '"text"'])

    report = _validate(path, tiny_config, tiny_tokenizer)

    assert not report.usable and report.good_rows == 0 and report.bad_rows == 3
    assert report.token_lengths is None and report.estimate is None
    assert "no good rows" in report.problems[0]


@pytest.mark.parametrize(
    ("on_overlength", "expected"),
    [("drop", {"dropped_rows": 10, "truncated_rows": 0}), ("truncate", {"dropped_rows": 0, "truncated_rows": 10})],
)
def test_overlength_rows_are_counted(tmp_path, tiny_config, tiny_tokenizer, on_overlength, expected):
    path = write_jsonl(tmp_path / "long.jsonl", chat_rows(10))

    report = _validate(
        path, tiny_config, tiny_tokenizer,
        hyperparams={"max_length": 16}, data={"on_overlength": on_overlength},
    )

    assert {key: getattr(report, key) for key in expected} == expected
    # Cut at 16 tokens, no reply is left to learn from, so neither policy leaves a usable file.
    assert report.trained_rows == 0 and not report.usable
    assert "max_length" in report.problems[-1]


def test_estimate_follows_accumulation_epochs_and_max_steps(tiny_config):
    config = _config(tiny_config, hyperparams={"batch_size": 2, "gradient_accumulation": 2, "epochs": 1.5})
    assert estimate_steps(9, config).steps == 5  # 5 batches -> 3 updates per epoch, x1.5 rounded up
    capped = _config(tiny_config, hyperparams={"max_steps": 7})
    assert estimate_steps(100, capped).steps == 7


def test_trainctl_validate_prints_the_report_and_exits_1_when_unusable(tmp_path, tiny_config, capsys):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(tiny_config), encoding="utf-8")
    good = write_jsonl(tmp_path / "good.jsonl", chat_rows(5) + ["{broken"])
    bad = write_jsonl(tmp_path / "bad.jsonl", ["{broken"])

    assert main(["validate", str(good), "--base-dir", str(base), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["verdict"], report["good_rows"], report["bad_lines"][0]["line"]) == ("skipping_bad_rows", 5, 6)

    assert main(["validate", str(bad), "--base-dir", str(base)]) == 1
    text = capsys.readouterr().out
    assert "bad.jsonl: rejected (not usable)" in text and "line 1: invalid JSON" in text
    assert "problem: no good rows" in text
    assert list(base.iterdir()) == [base / "config.json"]  # nothing trained, nothing written


def test_a_file_of_few_steps_gets_a_warning_saying_what_to_change(tmp_path, tiny_config, tiny_tokenizer):
    path = write_jsonl(tmp_path / "small.jsonl", chat_rows(10))

    small = _validate(path, tiny_config, tiny_tokenizer)  # 10 rows, batch 4: 3 steps
    enough = _validate(path, tiny_config, tiny_tokenizer, hyperparams={"epochs": 4, "batch_size": 1})

    [warning] = small.warnings
    assert warning.startswith("only 3 optimizer step(s)")
    assert "hyperparams.epochs (to 4 for about 10 steps)" in warning and "hyperparams.batch_size" in warning
    assert small.usable
    assert enough.estimate.steps == 40 and enough.warnings == []
