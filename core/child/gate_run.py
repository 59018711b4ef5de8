"""The training child's part of the promotion gate: measure the evaluation sets before and after training.

The daemon decides (``core.snapshots.gate``); the child measures, because it already holds the
model: before ``train()`` the loaded model *is* the current model (a resumed run loads its
checkpoint only inside ``train()``), and after it, the candidate. Both are measured on the same
tokenized rows: the file's held-out rows, every golden set in ``<base dir>/eval/`` and the memory
set. Losses are kept per row (``core.memory.row_losses``): the candidate's go into its model folder
and, once it is promoted, are the next file's "before" numbers, so the current model is measured
only on rows it was never measured on (the new file's held-out rows, a new golden file); those are
cached under ``cache/eval/``, so a retried or resumed file, and the files after a rejected one,
measure nothing before training.

On a LoRA run the adapter is kept aside before training (``trainer.kept_weights``) and nothing is
measured before ``train()``, so the file's first step does not wait for the gate: the current
model's missing numbers are measured after training, with the kept adapter put back for the
moment. A set larger than ``gate.round_rows`` is measured in rounds until its verdict is clear
(``core.child.gate_rounds``), its "before" numbers only as far as the rounds go. Without a kept
adapter (full fine-tuning, several processes) every "before" number is measured before training as
above.

Before training it also draws the replay rows (``core.memory``) for the file; after training it
writes the file's held-out rows, with their provenance, into the model folder
(:data:`HELDOUT_ROWS_FILENAME`), so the snapshot carries them into the memory set when it is promoted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from core.base.hashing import sha256_file
from core.child.gate_rounds import measure_in_rounds
from core.child.pairing import answer_dependence
from core.memory.buffers import HELDOUT_ROWS_FILENAME, MemorySet, ReplayBuffer, Row
from core.memory.row_losses import ROW_LOSSES_FILENAME, RowLosses, cache_path, row_key
from core.state.layout import BaseDir
from core.train import UltimateTrainer
from profiles import Example, get_profile
from trainer.config import TrainConfig
from trainer.data.eval_sets import (
    GOLDEN,
    HELDOUT,
    MEMORY,
    EvalSet,
    heldout_indices,
    load_golden_sets,
    tokenize_set,
)
from trainer.data.formats import RowError, RowStream
from trainer.kept_weights import KeptWeights, can_keep
from trainer.set_losses import SetLoss

logger = logging.getLogger(__name__)

_SKIPPED_ROWS = ("dropped", "untrained")


class GateRun:
    """Measures one file's evaluation sets in the training child.

    Args:
        layout: the base dir.
        config: the run's config.
        data_file: the claimed file.
        model_source: the model training starts from (the cache key of the "before" numbers).
        measure: False in the other processes of a torchrun group: only rank 0 measures and writes.
    """

    def __init__(self, layout: BaseDir, config: TrainConfig, data_file: Path, model_source: str,
                 measure: bool = True) -> None:
        self.layout, self.config, self.data_file, self.model_source = layout, config, Path(data_file), model_source
        self.measure = measure
        self.sha256 = sha256_file(self.data_file)
        self.profile = get_profile(config.profile)
        self.replay_rows: list[Row] = []
        self.sets: list[EvalSet] = []
        self.problems: list[dict] = []
        self.before: dict[str, SetLoss | None] = {}
        self.known: RowLosses | None = None
        self.fresh: RowLosses | None = None
        self.cache: Path | None = None
        self.kept: KeptWeights | None = None
        self.split_set: str | None = None
        self.trained = False
        self.measured_before = 0
        self.saved_before = 0
        self.seconds = 0.0

    def draw_replay(self, training_rows: int) -> list[dict]:
        """Replay examples for a file of ``training_rows`` training rows (``start_job(replay=...)``
        calls this once the file's dataset is built, so the file is not read again to count them)."""
        ratio = self.config.replay.ratio
        count = round(ratio * training_rows) if ratio > 0 else 0
        if count:
            self.replay_rows = ReplayBuffer(self.layout.memory).draw(count, self.sha256, self.config.replay.seed)
            logger.info("%s: %d replay rows drawn (ratio %g of %d training rows)", self.data_file.name,
                        len(self.replay_rows), ratio, training_rows)
        return [row.example for row in self.replay_rows]

    def measure_before(self, job: UltimateTrainer) -> None:
        """Build the sets and measure the model as loaded (the current model); call before ``train()``.
        Rows with a stored number for this model (see module doc) are not measured again, and a LoRA
        run keeps its adapter aside (``trainer.kept_weights``) instead of measuring anything: its
        missing rows are measured on that adapter after training (:meth:`measure_after`)."""
        if not (self.config.gate.enabled and self.measure):
            return
        started = time.perf_counter()
        self.sets = self._build_sets(job)
        precision, attention = job.precision.value, job.attention.value
        self.cache = cache_path(self.layout.root, self.model_source, precision, attention)
        self.known = RowLosses(precision, attention)
        if Path(self.model_source).is_dir():
            self.known.load(Path(self.model_source) / ROW_LOSSES_FILENAME)
        self.fresh = RowLosses(precision, attention).load(self.cache)
        self.known.rows.update(self.fresh.rows)
        if self.sets and can_keep(job.model, self.config.adapter):
            self.kept = KeptWeights(job.model)
        else:
            for evaluated in self.sets:
                self._measure_whole_before(job, evaluated)
        self._save_fresh()
        logger.info("%s: the current model measured on %d of %d evaluation rows before training (%s)",
                    self.data_file.name, self.measured_before, sum(s.rows for s in self.sets),
                    "the rest on its adapter, kept aside, after training" if self.kept is not None else
                    "the rest were known")
        self.seconds += time.perf_counter() - started

    def _measure_whole_before(self, job: UltimateTrainer, evaluated: EvalSet) -> SetLoss:
        """The current model's numbers of every row of ``evaluated`` (measured where not known)."""
        if evaluated.name not in self.before:
            keys = [row_key(f) for f in evaluated.features]
            seconds = self._measure_before_rows(job, evaluated, keys, range(len(keys)))
            self.before[evaluated.name] = SetLoss.from_rows(self.known.get(keys), seconds)
        return self.before[evaluated.name]

    def _in_rounds(self, evaluated: EvalSet) -> bool:
        """Whether ``evaluated`` is measured in rounds: a golden or memory set larger than a round, or
        the held-out rows on a kept adapter (their "before" must wait until the rounds ask for it)."""
        if not self._larger_than_a_round(evaluated):
            return False
        return evaluated.kind in (GOLDEN, MEMORY) or (evaluated.kind == HELDOUT and self.kept is not None)

    def _larger_than_a_round(self, evaluated: EvalSet) -> bool:
        gate = self.config.gate
        return 0 < gate.round_rows < evaluated.rows and gate.decisive_z > 0

    def _measure_before_rows(self, job: UltimateTrainer, evaluated: EvalSet, keys: list[str],
                             positions: Sequence[int]) -> float:
        """Measure the current model on the rows at ``positions`` that have no number yet (on the kept
        adapter once training has run); returns the seconds it took."""
        missing = [i for i in positions if keys[i] not in self.known.rows]
        if not missing:
            return 0.0
        if self.trained and self.kept is None:
            raise RuntimeError(f"{evaluated.name}: the current model is gone after training; its rows "
                               "must be measured before train()")
        with self.kept.restored(job.trainer.model) if self.trained else contextlib.nullcontext():
            loss = job.measure([evaluated.features[i] for i in missing])
        self.known.add([keys[i] for i in missing], loss.per_row)
        self.fresh.add([keys[i] for i in missing], loss.per_row)
        self.measured_before += len(missing)
        return loss.seconds

    def _save_fresh(self) -> None:
        if self.fresh is not None and self.measured_before > self.saved_before:
            self.fresh.save(self.cache)
            self.saved_before = self.measured_before

    def _build_sets(self, job: UltimateTrainer) -> list[EvalSet]:
        sets = []
        if job.eval_dataset is not None:
            kind = GOLDEN if self.config.eval.file else HELDOUT
            self.split_set = f"eval.file {self.config.eval.file}" if self.config.eval.file else HELDOUT
            sets.append(EvalSet(self.split_set, kind, list(job.eval_dataset)))
        golden, problems = load_golden_sets(self.layout.eval_dir, job.tokenizer, self.profile, self.config)
        self.problems = [{"path": p.path, "reason": p.reason} for p in problems]
        memory = MemorySet(self.layout.memory).rows(self.config.gate.memory_rows)
        memory_set = tokenize_set(MEMORY, MEMORY, [r.example for r in memory], job.tokenizer, self.profile, self.config)
        return sets + golden + ([memory_set] if memory_set.features else [])

    def measure_after(self, job: UltimateTrainer, model_dir: Path) -> dict:
        """Measure the trained model, write the held-out rows into ``model_dir``; returns the ``gate``
        section of ``result.json`` (the daemon judges it)."""
        if not self.measure:
            return {}
        started = time.perf_counter()
        self.trained = True
        table = []
        measured = RowLosses(job.precision.value, job.attention.value)
        for evaluated in self.sets:
            trained = self._measured_by_training(job, evaluated)
            if trained is not None:  # every row's number is known: the next file's "before" for all of them
                measured.add([row_key(f) for f in evaluated.features], trained.per_row)
            if self._in_rounds(evaluated):
                before, after, rows, z = self._measure_rounds(job, evaluated, trained)
            else:
                before, after, rows, z = self._measure_whole(job, evaluated, trained)
            measured.add([row_key(evaluated.features[i]) for i in rows], after.per_row)
            table.append({
                "set": evaluated.name, "kind": evaluated.kind, "sha256": evaluated.sha256,
                "rows": evaluated.rows, "tokens": evaluated.tokens, "rows_measured": len(rows),
                "z": round(z, 2) if math.isfinite(z) else None,
                "loss_before": before.loss, "loss_after": after.loss,
                "seconds": round(before.seconds + after.seconds, 3),
            })
        self._save_fresh()
        heldout = self._heldout_rows(job)
        pairing = answer_dependence(job, [r.example for r in heldout], measured) \
            if self.sets and self.config.gate.min_answer_dependence > 0 else None
        for row in table:
            if row["kind"] == HELDOUT and pairing:
                row.update(pairing_rows=pairing["rows"], loss_paired=pairing["loss_paired"],
                           loss_swapped=pairing["loss_swapped"])
        if measured.rows:
            measured.save(model_dir / ROW_LOSSES_FILENAME)  # the next file's "before", once promoted
        self.seconds += time.perf_counter() - started
        _write_rows(model_dir / HELDOUT_ROWS_FILENAME, heldout)
        return {
            "enabled": self.config.gate.enabled,
            "sets": table,
            "problems": self.problems,
            "heldout_rows": len(heldout),
            "split": None if job.eval_dataset is not None or self.config.eval.file else (
                f"{self.data_file.name} has {job.file_examples} example(s), too few to hold some out; "
                "it was trained whole and gated on the golden and memory sets only"),
            "replay": {"rows": len(self.replay_rows), "files": dict(Counter(r.file for r in self.replay_rows))},
            "before_rows_measured": self.measured_before,
            "seconds": round(self.seconds, 3),
        }

    def _measured_by_training(self, job: UltimateTrainer, evaluated: EvalSet) -> SetLoss | None:
        """The candidate's numbers of the set that training measured already (its eval split), or None."""
        if evaluated.name == self.split_set and job.heldout_loss is not None:
            return job.heldout_loss
        return None

    def _measure_whole(self, job: UltimateTrainer, evaluated: EvalSet,
                       trained: SetLoss | None) -> tuple[SetLoss, SetLoss, range, float]:
        """A set measured on every row: the current model (now, on the kept adapter, unless before
        training) and the candidate."""
        before = self._measure_whole_before(job, evaluated)
        after = job.measure(evaluated.features) if trained is None else dataclasses.replace(trained, seconds=0.0)
        return before, after, range(evaluated.rows), math.nan

    def _measure_rounds(self, job: UltimateTrainer, evaluated: EvalSet,
                        trained: SetLoss | None) -> tuple[SetLoss, SetLoss, list[int], float]:
        """A set measured round by round until its verdict is clear (``core.child.gate_rounds``)."""
        keys = [row_key(f) for f in evaluated.features]
        seconds = {"before": 0.0, "after": 0.0}

        def before(positions: list[int]) -> list[tuple[float, int]]:
            seconds["before"] += self._measure_before_rows(job, evaluated, keys, positions)
            return self.known.get([keys[i] for i in positions])

        def after(positions: list[int]) -> Sequence[tuple[float, int]]:
            if trained is not None:
                return [trained.per_row[i] for i in positions]
            loss = job.measure([evaluated.features[i] for i in positions])
            seconds["after"] += loss.seconds
            return loss.per_row

        gate = self.config.gate
        # the held-out rule is "lower than before": a limit of 0 above the current model's loss
        limit = 0.0 if evaluated.kind == HELDOUT else gate.max_regression
        rounds = measure_in_rounds(keys, before, after, limit, gate.round_rows, gate.decisive_z)
        logger.info("%s: %s measured on %d of its %d rows (%s)", self.data_file.name, evaluated.name,
                    len(rounds.rows), evaluated.rows,
                    "every row" if not math.isfinite(rounds.z) else f"clear at {abs(rounds.z):.1f} standard errors")
        return (SetLoss.from_rows(rounds.before, seconds["before"]), SetLoss.from_rows(rounds.after, seconds["after"]),
                rounds.rows, rounds.z)

    def _heldout_rows(self, job: UltimateTrainer) -> list[Row]:
        """The held-out examples with their lines (examples tokenization left out do not count)."""
        if self.config.eval.file or job.eval_dataset is None:
            return []
        skipped = {line for line, _tokens, what in job.data_stats.long_rows if what in _SKIPPED_ROWS}
        wanted, rows, kept = set(heldout_indices(job.file_examples, self.config)), [], 0
        for example in self._examples():  # one row at a time: the file may be larger than memory
            if example["_line"] in skipped:
                continue
            if kept in wanted:
                rows.append(Row.from_example(self.data_file.name, self.sha256, example))
            kept += 1
        if kept != job.file_examples:
            logger.warning("%s: %d examples read but %d trained; its held-out rows are not remembered",
                           self.data_file.name, kept, job.file_examples)
            return []
        return rows

    def _examples(self) -> Iterator[Example]:
        """The file's good rows, read one at a time."""
        return (item for item in RowStream(self.data_file, self.profile) if not isinstance(item, RowError))


def _write_rows(path: Path, rows: list[Row]) -> None:
    path.write_text("".join(json.dumps(row.to_dict()) + "\n" for row in rows), encoding="utf-8")
