"""Measuring a snapshot outside training: ``trainctl eval`` and the gate of ``trainctl snapshots promote``.

The sets are the gate's: the snapshot's own held-out rows (kept in the snapshot), every golden set
in ``eval/`` and the memory set; or the files given on the command line. Each model is loaded once
(``trainer.set_losses.LossMeter``) and measured exactly as the training child measures.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.memory.buffers import HELDOUT_ROWS_FILENAME, MemorySet, read_rows
from core.snapshots.gate import Decision, judge
from core.snapshots.store import SnapshotInfo
from core.state.layout import BaseDir
from profiles import get_profile
from trainer.config import TrainConfig
from trainer.data.eval_sets import (
    FILE,
    HELDOUT,
    MEMORY,
    EvalSet,
    SetProblem,
    load_golden_sets,
    read_set_file,
    tokenize_set,
)
from trainer.set_losses import LossMeter, SetLoss

logger = logging.getLogger(__name__)


def gate_sets(layout: BaseDir, config: TrainConfig, tokenizer, snapshot: SnapshotInfo | None,
              files: list[Path] = ()) -> tuple[list[EvalSet], list[SetProblem]]:
    """The sets to measure: ``files`` when given (each must be usable, else ``UserError``), else the
    snapshot's held-out rows, the golden sets and the memory set."""
    profile = get_profile(config.profile)
    if files:
        return [read_set_file(Path(f), str(f), FILE, tokenizer, profile, config) for f in files], []
    sets = []
    if snapshot is not None:
        heldout = read_rows(snapshot.path / HELDOUT_ROWS_FILENAME)
        sets.append(tokenize_set(HELDOUT, HELDOUT, [r.example for r in heldout], tokenizer, profile, config))
    golden, problems = load_golden_sets(layout.eval_dir, tokenizer, profile, config)
    memory = MemorySet(layout.memory).rows(config.gate.memory_rows)
    sets += golden + [tokenize_set(MEMORY, MEMORY, [r.example for r in memory], tokenizer, profile, config)]
    return [s for s in sets if s.features], problems


def measure_sets(meter: LossMeter, sets: list[EvalSet]) -> dict[str, SetLoss]:
    """Each set's loss under ``meter``'s model, by set name."""
    return {s.name: meter.measure(s.features) for s in sets}


def table(sets: list[EvalSet], after: dict[str, SetLoss], before: dict[str, SetLoss] | None = None) -> list[dict]:
    """The eval table (as in a manifest) from measured losses."""
    return [{
        "set": s.name, "kind": s.kind, "sha256": s.sha256, "rows": s.rows, "tokens": s.tokens,
        "loss_before": before[s.name].loss if before else None, "loss_after": after[s.name].loss,
    } for s in sets]


def gate_snapshot(layout: BaseDir, config: TrainConfig, candidate: SnapshotInfo,
                  current: str) -> tuple[Decision, list[SetProblem]]:
    """Judge ``candidate`` against the model ``current`` (the current snapshot, or the base model)
    on the gate's sets, as the daemon would have; both models are loaded here."""
    candidate_meter = LossMeter(candidate.path, config, layout.root)
    sets, problems = gate_sets(layout, config, candidate_meter.tokenizer, candidate)
    after = measure_sets(candidate_meter, sets)
    del candidate_meter
    before = measure_sets(LossMeter(current, config, layout.root), sets)
    return judge(_with_pairing(table(sets, after, before), candidate), config.gate), problems


def _with_pairing(rows: list[dict], candidate: SnapshotInfo) -> list[dict]:
    """The held-out row with the candidate's answer-pairing numbers from its manifest (measured
    once, in training: they do not depend on the current model; ``core.child.pairing``)."""
    recorded = next((r for r in (candidate.evaluation or {}).get("sets") or [] if r.get("kind") == HELDOUT), {})
    keys = ("pairing_rows", "loss_paired", "loss_swapped")
    return [{**row, **{k: recorded[k] for k in keys if k in recorded}} if row["kind"] == HELDOUT else row
            for row in rows]
