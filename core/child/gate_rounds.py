"""Measuring a large golden or memory set in rounds, and stopping once its verdict is clear.

The rule for a golden or memory set is about the whole set: the candidate's summed loss over its
rows may be at most ``1 + gate.max_regression`` times the current model's. Both models are measured
on the same rows, so each row gives a paired number ``e = after - (1 + max_regression) * before``
(summed losses, so long rows weigh by their tokens as in the set's mean), and the set passes when
the rows' ``e`` add up to at most 0.

A candidate that learned a new domain usually leaves the memory set a few percent better or worse,
well away from the limit, and a few hundred measured rows already show it. So the set is measured
in rounds of ``gate.round_rows`` rows, in a fixed random order (by row key, the SHA-256 of its tokens,
so that every model meets the rows in the same order and the numbers of one file's candidate are the
next file's "before" numbers for the same rows). After each round the mean of ``e`` over the
measured rows estimates the whole set's; its standard error carries the finite-population
correction ``1 - k/N``, because the rows are drawn without replacement from a set of ``N``. The
measuring stops when the estimate is ``gate.decisive_z`` standard errors on one side of 0; after the
last round the whole set is measured and the verdict is exact, as without rounds.

With ``decisive_z`` 3 each round that stops is on the wrong side of the whole set's verdict with a
probability of about 0.13% at most (normal approximation, a set exactly at the limit), and only a
set that close to the limit can be decided wrongly: a set well clear of it stops early and right,
and a close one is measured whole. ``tests/core/child/test_gate_rounds.py`` checks this on
thousands of drawn sets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

RowNumbers = Sequence[tuple[float, int]]
"""``(summed loss, trained tokens)`` of each row, as ``SetLoss.per_row``."""


@dataclass(frozen=True)
class Rounds:
    """What measuring in rounds measured."""

    rows: list[int]
    """Positions of the measured rows in the set, in measuring order."""
    before: list[tuple[float, int]]
    """The current model's numbers of those rows."""
    after: list[tuple[float, int]]
    """The candidate's numbers of those rows."""
    z: float
    """Standard errors between the estimated whole-set ``e`` and 0 (negative: within the limit);
    ``±inf`` once every row was measured."""


def measuring_order(keys: Sequence[str]) -> list[int]:
    """Positions of the rows in the order of their keys: random, but the same for every model."""
    return sorted(range(len(keys)), key=keys.__getitem__)


def regression_z(after: RowNumbers, before: RowNumbers, population: int, max_regression: float) -> float:
    """How many standard errors the whole set's summed ``after - (1 + max_regression) * before`` is
    estimated to lie from 0, from ``len(after)`` of its ``population`` rows (see module doc).

    Returns ``±inf`` when every row is measured (the sign is the verdict: negative passes) or when a
    number is not finite (an overflowing candidate regresses; an overflowing current model passes
    every candidate, as ``SetLoss`` treats it); 0 when the rows cannot tell (fewer than two, or all alike).
    """
    if not all(math.isfinite(a) for a, _ in after):
        return math.inf
    if not all(math.isfinite(b) for b, _ in before):
        return -math.inf
    e = [a - (1 + max_regression) * b for (a, _), (b, _) in zip(after, before, strict=True)]
    k, mean = len(e), math.fsum(e) / max(len(e), 1)
    if k >= population:
        return math.copysign(math.inf, mean) if mean else -math.inf
    if k < 2:
        return 0.0
    variance = math.fsum((x - mean) ** 2 for x in e) / (k - 1)
    standard_error = math.sqrt(variance / k * (1 - k / population))
    return mean / standard_error if standard_error > 0 else 0.0


def measure_in_rounds(
    keys: Sequence[str],
    before: Callable[[list[int]], RowNumbers],
    after: Callable[[list[int]], RowNumbers],
    max_regression: float,
    round_rows: int,
    decisive_z: float,
) -> Rounds:
    """Measure the rows of a set round by round until its verdict is clear (see module doc).

    Args:
        keys: each row's key (``core.memory.row_losses.row_key``).
        before: the current model's numbers of the rows at the given positions.
        after: the candidate's numbers of the rows at the given positions.
        max_regression: ``gate.max_regression``.
        round_rows: rows a round; 0 measures the whole set at once.
        decisive_z: stop once the estimate is this many standard errors from the limit.
    """
    order = measuring_order(keys)
    step = round_rows if round_rows > 0 and decisive_z > 0 else max(len(order), 1)
    rows: list[int] = []
    numbers_before: list[tuple[float, int]] = []
    numbers_after: list[tuple[float, int]] = []
    z = 0.0
    for start in range(0, len(order), step):
        chunk = order[start:start + step]
        numbers_before += before(chunk)
        numbers_after += after(chunk)
        rows += chunk
        z = regression_z(numbers_after, numbers_before, len(order), max_regression)
        if abs(z) >= decisive_z:
            break
    return Rounds(rows, numbers_before, numbers_after, z)
