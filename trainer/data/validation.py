"""Validate one JSONL file before training: which rows are bad, how long the rest are, is it usable.

The same :class:`ValidationReport` is printed by ``trainctl validate FILE`` and written by the
daemon next to the file it moved (``queue/done/NAME.report.json`` or ``queue/failed/...``), so what
a user checks by hand is exactly what the daemon decides on.
"""

from __future__ import annotations

import logging
import math
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from core.base.clock import utc_now_iso
from core.base.hashing import sha256_file
from profiles import Profile, get_profile
from trainer.config import TrainConfig
from trainer.data.dataset import cached_pass
from trainer.data.file_pass import MAX_LISTED_ROWS, FilePass, tokenize_file
from trainer.data.formats import DataFileError
from trainer.data.tokenization import ChatTemplateError
from trainer.model.loading import load_tokenizer

logger = logging.getLogger(__name__)

FEW_STEPS = 10
"""Fewer optimizer steps than this on a file earn a warning in its report: it barely trains."""


class Verdict(str, Enum):
    """What the ``data.on_bad_row`` policy made of the file."""

    ACCEPTED = "accepted"
    """Every row is good."""
    SKIPPING_BAD_ROWS = "skipping_bad_rows"
    """Some rows are bad; ``on_bad_row=skip`` trains on the good ones."""
    REJECTED = "rejected"
    """Not trained; ``problems`` says why."""


class BadRow(BaseModel):
    """One row that cannot be trained on."""

    line: int = Field(description="1-based line number in the file.")
    reason: str = Field(description="What is wrong with the row and how to fix it.")


class LengthStats(BaseModel):
    """Token counts of the good rows, before truncation."""

    min: int
    mean: float
    p50: int
    p95: int
    max: int


class StepEstimate(BaseModel):
    """How many optimizer steps training the file should take."""

    examples: int = Field(description="Examples that would be trained on.")
    batch_size: int
    gradient_accumulation: int
    epochs: float
    max_steps: int | None = Field(description="hyperparams.max_steps; overrides epochs when set.")
    steps: int = Field(description="Estimated optimizer steps.")


class ValidationReport(BaseModel):
    """Everything known about a file before it is trained."""

    file: str = Field(description="File name.")
    sha256: str = Field(description="SHA-256 of the file's content (the ledger key).")
    format: str | None = Field(description="Row format, set by the first good row.")
    total_lines: int = Field(description="Non-blank lines.")
    good_rows: int
    bad_rows: int
    truncated_rows: int = Field(description="Good rows longer than max_length, cut to fit.")
    dropped_rows: int = Field(description="Good rows longer than max_length, left out (on_overlength=drop).")
    no_trained_token_rows: int = Field(description="Good rows with no token to learn from after truncation.")
    trained_rows: int = Field(description="Rows that would be trained on.")
    trained_share: float = Field(description="Share of good rows (after drops) with at least one trained token.")
    trained_tokens: int = Field(description="Tokens that carry a loss.")
    token_lengths: LengthStats | None = Field(description="Token counts of the good rows.")
    estimate: StepEstimate | None
    bad_lines: list[BadRow] = Field(
        description=f"The bad rows with their line number and reason: the first {MAX_LISTED_ROWS}; "
        "bad_rows counts all of them."
    )
    long_rows: list[BadRow] = Field(
        default_factory=list,
        description="Good rows cut or left out for their length (or left with nothing to learn from), "
        f"with their line number and what happened (the first {MAX_LISTED_ROWS}).",
    )
    policy: str = Field(description="data.on_bad_row: skip bad rows, or reject the whole file.")
    verdict: Verdict
    usable: bool = Field(description="True when the file can be trained on.")
    problems: list[str] = Field(description="Why the file is not usable, and what to do.")
    warnings: list[str] = Field(
        default_factory=list, description="What trains but may not do what you expect (e.g. too few steps), and what to do."
    )
    checked_at: str


def step_warnings(estimate: StepEstimate | None) -> list[str]:
    """A warning when the file yields fewer than :data:`FEW_STEPS` optimizer steps, saying what to change."""
    if estimate is None or estimate.max_steps is not None or estimate.steps >= FEW_STEPS:
        return []
    epochs = math.ceil(estimate.epochs * FEW_STEPS / estimate.steps)
    return [
        f"only {estimate.steps} optimizer step(s): too few to change the model much; raise hyperparams.epochs "
        f"(to {epochs} for about {FEW_STEPS} steps), lower hyperparams.batch_size or gradient_accumulation, or "
        "add rows"
    ]


def estimate_steps(examples: int, config: TrainConfig) -> StepEstimate:
    """Optimizer steps for ``examples`` examples under ``config.hyperparams`` (as the Trainer counts)."""
    hp = config.hyperparams
    per_epoch = max(1, math.ceil(math.ceil(examples / hp.batch_size) / hp.gradient_accumulation))
    steps = hp.max_steps if hp.max_steps is not None else math.ceil(per_epoch * hp.epochs)
    return StepEstimate(
        examples=examples,
        batch_size=hp.batch_size,
        gradient_accumulation=hp.gradient_accumulation,
        epochs=hp.epochs,
        max_steps=hp.max_steps,
        steps=steps,
    )


def validate_file(
    path: Path, config: TrainConfig, tokenizer: Any, profile: Profile, cache_dir: Path | None = None
) -> ValidationReport:
    """Read, check and tokenize ``path`` the way training would, without training.

    The file streams through one row at a time, so memory does not grow with it. A file that
    cannot be read at all gives a report with ``usable=False``, not an exception.

    Args:
        path: The JSONL file.
        config: The resolved config (``data``, ``hyperparams`` and ``eval`` are used).
        tokenizer: The tokenizer of the model the file would be trained on.
        profile: The profile named by ``config.profile``.
        cache_dir: The tokenized-data cache (``trainer.data.dataset``): the features are stored
            there for the training child, or the pass is read from there if the file was tokenized
            before. None tokenizes without keeping the features.
    """
    path = Path(path)
    fields: dict[str, Any] = {
        "file": path.name, "sha256": sha256_file(path), "policy": config.data.on_bad_row,
        "checked_at": utc_now_iso(),
    }
    try:
        if cache_dir is not None:
            found = cached_pass(path, tokenizer, profile, config, cache_dir)[1]
        else:
            found = tokenize_file(path, tokenizer, profile, config, None)
    except DataFileError as exc:
        return _unreadable(fields, str(exc))
    except ChatTemplateError as exc:
        return _unreadable(fields, str(exc).replace(str(path), path.name, 1))
    report = _report(fields, found, config)
    logger.info(
        "%s: %s (%d good, %d bad, %d trained rows)",
        path.name, report.verdict.value, report.good_rows, report.bad_rows, report.trained_rows,
    )
    for warning in report.warnings:
        logger.warning("%s: %s", path.name, warning)
    return report


def _report(fields: dict[str, Any], found: FilePass, config: TrainConfig) -> ValidationReport:
    stats, good = found.stats, found.good_rows
    kept = good - stats.dropped
    problems = _problems(good, found.bad_rows, stats.examples, config)
    report = ValidationReport(
        **fields,
        format=found.format,
        total_lines=found.total_lines,
        good_rows=good,
        bad_rows=found.bad_rows,
        truncated_rows=stats.truncated,
        dropped_rows=stats.dropped,
        no_trained_token_rows=stats.no_trained_tokens,
        trained_rows=stats.trained_rows,
        trained_share=round(stats.trained_rows / kept, 4) if kept else 0.0,
        trained_tokens=stats.trained_tokens,
        token_lengths=LengthStats(**stats.length_summary()) if stats.length_counts else None,
        estimate=estimate_steps(stats.examples, config) if stats.examples else None,
        bad_lines=[BadRow(line=error.line, reason=error.reason) for error in found.errors],
        long_rows=[_long_row(line, tokens, what, config) for line, tokens, what in stats.long_rows[:MAX_LISTED_ROWS]],
        verdict=_verdict(problems, found.bad_rows),
        usable=not problems,
        problems=problems,
    )
    report.warnings = step_warnings(report.estimate) if report.usable else []
    return report


def validate_path(path: Path, config: TrainConfig, model_source: str) -> ValidationReport:
    """Validate ``path`` with ``config``, its profile and the tokenizer of ``model_source``.

    This is ``trainctl validate``: the daemon would make the same decision for this file now.

    Raises:
        DataFileError: ``path`` is not a regular file.
        ModelSourceError: the model to take the tokenizer from cannot be found.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: not a file; give the path of a .jsonl file")
    tokenizer = load_tokenizer(model_source, config.trust_remote_code)
    return validate_file(path, config, tokenizer, get_profile(config.profile))


def _long_row(line: int, tokens: int, what: str, config: TrainConfig) -> BadRow:
    limit = config.hyperparams.max_length
    size = f"{tokens} tokens" + (f", over hyperparams.max_length ({limit})" if tokens > limit else "")
    reason = {
        "truncated": f"{size}: truncated to {limit} (data.on_overlength=truncate)",
        "dropped": f"{size}: left out (data.on_overlength=drop)",
        "untrained": f"{size}: nothing left to learn from"
        + (f" once truncated to {limit}; raise max_length or shorten the prompt" if tokens > limit else ""),
    }[what]
    return BadRow(line=line, reason=reason)


def _problems(good: int, bad: int, trained: int, config: TrainConfig) -> list[str]:
    if good == 0:
        return ["no good rows; fix the lines listed under bad_lines and drop the file in again"]
    problems = []
    if bad and config.data.on_bad_row == "reject":
        problems.append(
            f"{bad} bad row(s) and data.on_bad_row is 'reject'; fix them, or set data.on_bad_row "
            "to 'skip' in config.json to train on the good rows"
        )
    if trained == 0:
        problems.append(
            "no row has a token to learn from after truncation or dropping; raise "
            "hyperparams.max_length in config.json or shorten the prompts"
        )
    return problems


def _verdict(problems: list[str], bad: int) -> Verdict:
    if problems:
        return Verdict.REJECTED
    return Verdict.SKIPPING_BAD_ROWS if bad else Verdict.ACCEPTED


def _unreadable(fields: dict[str, Any], reason: str, total_lines: int = 0) -> ValidationReport:
    logger.warning("%s: cannot be trained: %s", fields["file"], reason)
    return ValidationReport(
        **{"format": None, **fields},
        total_lines=total_lines, good_rows=0, bad_rows=0, truncated_rows=0, dropped_rows=0,
        no_trained_token_rows=0, trained_rows=0, trained_share=0.0, trained_tokens=0,
        token_lengths=None, estimate=None, bad_lines=[], verdict=Verdict.REJECTED, usable=False,
        problems=[reason],
    )


def format_report(report: ValidationReport, max_bad_lines: int = 20) -> str:
    """A human-readable summary of ``report`` (for ``trainctl validate`` without ``--json``)."""
    lines = [
        f"{report.file}: {report.verdict.value}" + ("" if report.usable else " (not usable)"),
        f"  format {report.format or '-'}, {report.total_lines} lines: {report.good_rows} good, "
        f"{report.bad_rows} bad (on_bad_row={report.policy})",
        f"  {report.trained_rows} rows trained ({report.trained_share:.0%} of good rows), "
        f"{report.truncated_rows} truncated, {report.dropped_rows} dropped, "
        f"{report.trained_tokens} trained tokens",
    ]
    if report.token_lengths:
        t = report.token_lengths
        lines.append(f"  tokens per row: min {t.min}, mean {t.mean}, p50 {t.p50}, p95 {t.p95}, max {t.max}")
    if report.estimate:
        e = report.estimate
        lines.append(
            f"  about {e.steps} steps ({e.examples} examples, batch {e.batch_size} x "
            f"accumulation {e.gradient_accumulation}, {e.epochs} epochs, max_steps {e.max_steps})"
        )
    for row in report.bad_lines[:max_bad_lines]:
        lines.append(f"  line {row.line}: {row.reason}")
    if len(report.bad_lines) > max_bad_lines:
        lines.append(f"  ... {len(report.bad_lines) - max_bad_lines} more bad lines (see --json)")
    for row in report.long_rows[:max_bad_lines]:
        lines.append(f"  line {row.line}: {row.reason}")
    if len(report.long_rows) > max_bad_lines:
        lines.append(f"  ... {len(report.long_rows) - max_bad_lines} more long rows (see --json)")
    lines.extend(f"  problem: {problem}" for problem in report.problems)
    lines.extend(f"  warning: {warning}" for warning in report.warnings)
    return "\n".join(lines)
