"""The mismatch baseline: each held-out row's last answer moved to the next row's question."""

from __future__ import annotations

from core.child.pairing import answer_dependence, swapped_answers
from core.memory.row_losses import RowLosses, row_key
from core.train import UltimateTrainer
from tests.conftest import chat_rows, write_jsonl
from trainer.config import TrainConfig
from trainer.data.eval_sets import tokenize_set


def _chat(question: str, *answers: str) -> dict:
    messages = [{"role": "user", "content": question}]
    for answer in answers:
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "more"}]
    return {"messages": messages[:-1]}


def test_the_last_answer_of_each_row_comes_from_the_next_row():
    rows = [_chat("q1", "first", "a1"), _chat("q2", "a2"), _chat("q3", "a3")]
    swapped = swapped_answers(rows)
    assert [r["messages"][-1]["content"] for r in swapped] == ["a2", "a3", "a1"]
    assert swapped[0]["messages"][1]["content"] == "first"  # earlier turns stay as written
    assert [r["messages"][0]["content"] for r in swapped] == ["q1", "q2", "q3"]
    assert rows[0]["messages"][-1]["content"] == "a1"  # the rows given are not changed


def test_rows_without_a_pairing_to_test_give_none():
    assert swapped_answers([_chat("q1", "same"), _chat("q2", "same")]) is None
    assert swapped_answers([_chat("q1", "a1")]) is None
    assert swapped_answers([{"text": "plain"}, {"text": "text"}]) is None


def test_the_candidate_is_measured_on_the_rows_as_written_and_swapped(tiny_config, tmp_path):
    config = TrainConfig(**tiny_config)
    rows = chat_rows(6, seed=2)
    job = UltimateTrainer(config, write_jsonl(tmp_path / "f.jsonl", rows), base_dir=tmp_path,
                          model_source=config.base_model, output_dir=tmp_path / "ckpt")
    job.setup()
    examples = [dict(r) for r in rows]
    known = RowLosses(job.precision.value, job.attention.value)
    measured = answer_dependence(job, examples, known)

    paired = tokenize_set("p", "heldout", examples, job.tokenizer, job.profile, config).features
    swapped = tokenize_set("s", "heldout", swapped_answers(examples), job.tokenizer, job.profile, config).features
    assert measured["rows"] == 6 and known.missing([row_key(f) for f in paired]) == []  # kept for the snapshot
    assert abs(measured["loss_paired"] - job.measure(paired).loss) < 1e-6
    assert abs(measured["loss_swapped"] - job.measure(swapped).loss) < 1e-6
    assert measured["loss_swapped"] != measured["loss_paired"]
