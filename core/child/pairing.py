"""Do a file's answers belong to their questions? The mismatch baseline of the promotion gate.

A file whose answers were shuffled among its questions (garbage labels) still teaches a model the
words and style of its answers, so every loss can fall while it trains: loss alone does not catch
it (docs/learning.md). What it cannot teach is that *this* answer follows *this* question. So the
child measures the candidate on the file's held-out rows twice: as they are (``loss_paired``), and
with each row's last answer replaced by the next row's (``loss_swapped``, the mismatch baseline).
In a file of real questions and answers the candidate predicts an answer better after its own
question, so the swapped loss is clearly higher; in a file of shuffled answers the held-out pairs
are themselves mismatched, and swapping them again changes nothing. The gate rejects a candidate
whose swapped loss is not at least ``gate.min_answer_dependence`` above its paired loss
(``core.snapshots.gate``).

Only the first :data:`PAIRING_ROWS` held-out rows are used (a mean over that many rows is stable and
it bounds the cost), and only rows with an assistant answer; text-only rows have no pairing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from core.memory.row_losses import RowLosses, row_key
from core.train import UltimateTrainer
from trainer.data.eval_sets import HELDOUT, tokenize_set
from trainer.set_losses import SetLoss

logger = logging.getLogger(__name__)

PAIRING_ROWS = 64


def swapped_answers(examples: Sequence[dict]) -> list[dict] | None:
    """Each example with its last assistant answer taken from the next example (the last from the
    first); None when fewer than two examples have an answer or all answers are the same."""
    chats = [e for e in examples if any(m.get("role") == "assistant" for m in e.get("messages", ()))]
    answers = [_last_answer(e["messages"]) for e in chats]
    if len(chats) < 2 or len({a["content"] for a in answers}) < 2:
        return None
    swapped = []
    for i, example in enumerate(chats):
        messages = list(example["messages"])
        last = max(j for j, m in enumerate(messages) if m.get("role") == "assistant")
        messages[last] = {**messages[last], "content": answers[(i + 1) % len(chats)]["content"]}
        swapped.append({**example, "messages": messages})
    return swapped


def _last_answer(messages: Sequence[dict]) -> dict:
    return [m for m in messages if m.get("role") == "assistant"][-1]


def answer_dependence(job: UltimateTrainer, examples: Sequence[dict], known: RowLosses) -> dict | None:
    """The candidate's loss on up to :data:`PAIRING_ROWS` held-out ``examples``, paired and swapped.

    Args:
        job: the trained job (its model is the candidate).
        examples: the file's held-out examples.
        known: the candidate's per-row losses measured already (the held-out rows are in it).

    Returns:
        ``{"rows", "loss_paired", "loss_swapped"}``, or None when the rows have no pairing to test.
    """
    chosen = [e for e in examples if "messages" in e][:PAIRING_ROWS]
    swapped = swapped_answers(chosen)
    if swapped is None:
        return None
    paired = tokenize_set(HELDOUT, HELDOUT, chosen, job.tokenizer, job.profile, job.config).features
    mismatched = tokenize_set(HELDOUT, HELDOUT, swapped, job.tokenizer, job.profile, job.config).features
    if not paired or len(paired) != len(mismatched):
        logger.info("the answer pairing is not measured: some held-out rows have no trained token once swapped")
        return None
    keys = [row_key(f) for f in paired]
    missing = known.missing(keys)
    if missing:
        known.add([keys[i] for i in missing], job.measure([paired[i] for i in missing]).per_row)
    paired_loss = SetLoss.from_rows(known.get(keys), 0.0).loss
    swapped_loss = job.measure(mismatched).loss
    return {"rows": len(paired), "loss_paired": paired_loss, "loss_swapped": swapped_loss}
