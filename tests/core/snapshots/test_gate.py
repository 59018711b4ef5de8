"""The gate's rules on a measured table: held-out must fall, golden and memory may rise at most max_regression."""

from __future__ import annotations

from core.snapshots.gate import Verdict, format_eval_table, judge
from core.snapshots.store import _gate_losses
from trainer.config.gate import GateSettings


def _row(name: str, kind: str, before: float | None, after: float | None) -> dict:
    return {"set": name, "kind": kind, "sha256": "0" * 64, "rows": 4, "tokens": 40,
            "loss_before": before, "loss_after": after}


def test_a_candidate_that_improves_and_keeps_the_rest_is_promoted():
    decision = judge([_row("heldout", "heldout", 2.0, 1.5), _row("eval/a.jsonl", "golden", 1.0, 1.019),
                      _row("memory", "memory", 1.0, 0.9)], GateSettings())
    assert decision.verdict is Verdict.PROMOTED and decision.rule is None
    assert [row["verdict"] for row in decision.table] == ["improved", "ok", "ok"]


def test_a_golden_or_memory_regression_above_the_limit_rejects_and_names_the_set():
    decision = judge([_row("heldout", "heldout", 2.0, 1.5), _row("memory", "memory", 1.0, 1.03)], GateSettings())
    assert decision.verdict is Verdict.REJECTED
    assert decision.table[1]["verdict"] == "regressed"
    assert "gate.max_regression" in decision.rule and "memory rose 3.0%" in decision.rule


def test_held_out_loss_that_does_not_fall_rejects_unless_improvement_is_not_required():
    rows = [_row("heldout", "heldout", 2.0, 2.0)]
    assert judge(rows, GateSettings()).verdict is Verdict.REJECTED
    assert "gate.require_improvement" in judge(rows, GateSettings()).rule
    assert judge(rows, GateSettings(require_improvement=False)).verdict is Verdict.PROMOTED


def test_a_file_too_small_to_split_is_gated_on_the_other_sets_only():
    rows = [_row("eval/a.jsonl", "golden", 1.0, 1.0)]
    assert judge(rows, GateSettings()).verdict is Verdict.PROMOTED
    assert judge([], GateSettings()).verdict is Verdict.PROMOTED


def test_a_disabled_gate_judges_nothing():
    decision = judge([_row("memory", "memory", 1.0, 5.0)], GateSettings(enabled=False))
    assert decision.verdict is Verdict.UNGATED and decision.rule is None


def test_the_table_shows_every_set_with_its_change():
    text = format_eval_table(judge([_row("memory", "memory", 1.0, 1.5)], GateSettings()).table)
    assert "memory" in text and "+50.0%" in text and "regressed" in text


def test_a_set_measured_in_rounds_says_on_how_many_rows_it_was_judged():
    row = {**_row("memory", "memory", 1.0, 1.5), "rows": 512, "rows_measured": 128, "z": 12.34}
    decision = judge([row], GateSettings())
    assert "on 128 of its 512 rows, 12.3 standard errors past the limit" in decision.rule
    assert "128/512" in format_eval_table(decision.table)
    assert _gate_losses({"sets": decision.table}) == "memory 1.000->1.500 (on 128/512 rows)"
    whole = {**row, "rows_measured": 512, "z": None}
    assert "rows" not in judge([whole], GateSettings()).rule.split("allowed")[0].split(")")[0]
    assert _gate_losses({"sets": [whole]}) == "memory 1.000->1.500"


def test_answers_that_fit_another_question_as_well_as_their_own_reject_the_file():
    good = {**_row("heldout", "heldout", 2.0, 1.5), "loss_paired": 1.5, "loss_swapped": 1.8}
    shuffled = {**_row("heldout", "heldout", 2.0, 1.5), "loss_paired": 1.5, "loss_swapped": 1.52}
    assert judge([good], GateSettings()).verdict is Verdict.PROMOTED
    decision = judge([shuffled], GateSettings())
    assert decision.verdict is Verdict.REJECTED and decision.table[0]["verdict"] == "answers unpaired"
    assert "gate.min_answer_dependence" in decision.rule and "+1.3%" in decision.rule
    assert judge([shuffled], GateSettings(min_answer_dependence=0)).verdict is Verdict.PROMOTED
