"""The promotion gate: may a candidate replace ``current_model``? Judged from measured losses.

The training child measures each evaluation set on the current model (``loss_before``) and on the
candidate (``loss_after``); :func:`judge` applies the rules of the ``gate`` config section:

* **held-out** (the file's own rows): with ``gate.require_improvement`` the candidate's loss must be
  lower than the current model's, or the file taught nothing that generalizes (shuffled answers,
  labels that contradict the questions);
* **answers paired** (same held-out rows): with ``gate.min_answer_dependence`` the candidate's loss
  must rise by that share when each answer is moved to another row's question, or the answers do
  not depend on their questions (shuffled labels; ``core.child.pairing``);
* **golden** (``eval/*.jsonl``) and **memory** (earlier files' held-out rows): the candidate's loss
  may be at most ``gate.max_regression`` (a share) above the current model's, so a file cannot buy
  its own gain with what the model knew. A set larger than ``gate.round_rows`` is measured in
  rounds until its verdict is clear (``core.child.gate_rounds``); its losses are then those of the
  rows measured (``rows_measured``, both models on the same rows).

A set without a number on both sides (a file too small to split has no held-out set) is not judged.
The verdict and the table go into the snapshot's manifest once, when the snapshot is created, so a
restart never judges a file a second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from trainer.config.gate import GateSettings
from trainer.data.eval_sets import FILE, GOLDEN, HELDOUT, MEMORY


class Verdict(str, Enum):
    """What the gate decided about a candidate."""

    PROMOTED = "promoted"
    """Passed every rule (or the gate is off) and was promoted."""
    REJECTED = "rejected"
    """Failed a rule: kept as a snapshot, not promoted."""
    UNGATED = "ungated"
    """Made with ``gate.enabled`` false: promoted without being judged."""


@dataclass
class Decision:
    """The gate's verdict, the rules that failed, and the table it judged (with a verdict per set)."""

    verdict: Verdict
    failed: list[str] = field(default_factory=list)
    table: list[dict] = field(default_factory=list)

    @property
    def rule(self) -> str | None:
        """The failed rules in one line, or None."""
        return "; ".join(self.failed) or None


def _judge_row(row: dict, gate: GateSettings) -> tuple[str, str | None]:
    """``(verdict of the set, failed rule or None)``."""
    before, after, name = row.get("loss_before"), row.get("loss_after"), row["set"]
    if before is None or after is None:
        return "-", None
    if row["kind"] == HELDOUT:
        if gate.require_improvement and not after < before:
            return "not improved", (f"gate.require_improvement: the loss on {name} (the file's own held-out rows) "
                                    f"must fall, but went from {before:.4f} to {after:.4f}")
        return _judge_pairing(row, gate)
    if row["kind"] in (GOLDEN, MEMORY, FILE):
        limit = before * (1 + gate.max_regression)
        if after <= limit:
            return "ok", None
        return "regressed", (f"gate.max_regression: the loss on {name} rose {100 * (after / before - 1):.1f}% "
                             f"({before:.4f} -> {after:.4f}{_measured_share(row)}), more than the "
                             f"{100 * gate.max_regression:g}% allowed")
    return "-", None


def _measured_share(row: dict) -> str:
    """``on K of its N rows, ...`` for a set measured in rounds (``core.child.gate_rounds``)."""
    measured, rows, z = row.get("rows_measured"), row["rows"], row.get("z")
    if measured is None or measured >= rows:
        return ""
    return f" on {measured} of its {rows} rows, {abs(z):.1f} standard errors past the limit" if z else \
        f" on {measured} of its {rows} rows"


def _judge_pairing(row: dict, gate: GateSettings) -> tuple[str, str | None]:
    """The mismatch baseline (``core.child.pairing``): answers must fit their own questions best."""
    verdict = "improved" if gate.require_improvement else "-"
    paired, swapped = row.get("loss_paired"), row.get("loss_swapped")
    if gate.min_answer_dependence <= 0 or paired is None or swapped is None:
        return verdict, None
    if swapped >= paired * (1 + gate.min_answer_dependence):
        return verdict, None
    return "answers unpaired", (
        f"gate.min_answer_dependence: on {row['set']} the candidate's loss with each answer moved to another "
        f"row's question ({swapped:.4f}) is only {100 * (swapped / paired - 1):+.1f}% above its loss on the "
        f"rows as written ({paired:.4f}), not the {100 * gate.min_answer_dependence:g}% required: the answers "
        "do not depend on their questions (shuffled or wrong labels?); check the file, or lower "
        "gate.min_answer_dependence if its answers are meant to be the same whatever the question")


def judge(sets: list[dict], gate: GateSettings) -> Decision:
    """Apply the gate's rules to a measured table (the ``sets`` of the child's ``gate`` result)."""
    if not gate.enabled:
        return Decision(Verdict.UNGATED, [], [{**row, "verdict": "-"} for row in sets])
    table, failed = [], []
    for row in sets:
        verdict, rule = _judge_row(row, gate)
        table.append({**row, "verdict": verdict})
        if rule:
            failed.append(rule)
    return Decision(Verdict.REJECTED if failed else Verdict.PROMOTED, failed, table)


def evaluation_record(measured: dict | None, decision: Decision) -> dict:
    """The ``evaluation`` section of a snapshot's manifest: verdict, failed rules, the table, replay."""
    measured = measured or {}
    return {
        "verdict": decision.verdict.value,
        "rule": decision.rule,
        "sets": decision.table,
        "split": measured.get("split"),
        "problems": measured.get("problems", []),
        "replay": measured.get("replay"),
        "heldout_rows": measured.get("heldout_rows"),
        "before_rows_measured": measured.get("before_rows_measured"),
        "seconds": measured.get("seconds"),
    }


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_eval_table(table: list[dict]) -> str:
    """The eval table as text: set, rows, tokens, loss before and after, change, verdict."""
    if not table:
        return "no evaluation sets (none measured)"
    header = ("SET", "ROWS", "TOKENS", "BEFORE", "AFTER", "CHANGE", "VERDICT")
    rows = [header]
    for row in table:
        before, after = row.get("loss_before"), row.get("loss_after")
        change = f"{100 * (after / before - 1):+.1f}%" if before and after is not None else "-"
        measured = row.get("rows_measured", row["rows"])
        count = str(row["rows"]) if measured >= row["rows"] else f"{measured}/{row['rows']}"
        rows.append((row["set"], count, str(row["tokens"]), _loss(before), _loss(after), change,
                     row.get("verdict", "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
