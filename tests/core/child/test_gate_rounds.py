"""Measuring a set in rounds: the verdict agrees with measuring every row, and clear sets stop early."""

from __future__ import annotations

import hashlib
import math
import random

from core.child.gate_rounds import measure_in_rounds, measuring_order, regression_z

MAX_REGRESSION = 0.02


def _drawn_set(rng: random.Random, rows: int, change: float, spread: float) -> tuple[list, list, list[str]]:
    """Per-row numbers of a memory-like set: rows of 5-200 trained tokens, a current model's loss
    near 2 a token, and a candidate whose loss changes by ``change`` on average with ``spread`` row to row."""
    before, after, keys = [], [], []
    for i in range(rows):
        tokens = rng.randint(5, 200)
        loss = tokens * rng.uniform(1.0, 3.0)
        before.append((loss, tokens))
        after.append((loss * (1 + change + rng.gauss(0, spread)), tokens))
        keys.append(hashlib.sha256(f"{rows}-{i}-{rng.random()}".encode()).hexdigest())
    return before, after, keys


def _rounds(before, after, keys, round_rows=128, decisive_z=3.0):
    asked = []

    def measured(numbers):
        def get(positions):
            asked.append(len(positions))
            return [numbers[i] for i in positions]
        return get

    return measure_in_rounds(keys, measured(before), measured(after), MAX_REGRESSION, round_rows, decisive_z), asked


def _whole_set_passes(before, after) -> bool:
    return sum(a for a, _ in after) <= (1 + MAX_REGRESSION) * sum(b for b, _ in before)


def test_the_verdict_matches_the_whole_set_and_clear_sets_stop_after_one_round():
    rng = random.Random(0)
    disagreements, early, close_and_early = 0, 0, 0
    trials = 3000
    for _ in range(trials):
        change = rng.uniform(-0.06, 0.10)
        before, after, keys = _drawn_set(rng, 512, change, rng.uniform(0.01, 0.08))
        rounds, _ = _rounds(before, after, keys)
        passed = rounds.z < 0
        disagreements += passed != _whole_set_passes(before, after)
        early += len(rounds.rows) < 512
        close_and_early += len(rounds.rows) < 512 and abs(change - MAX_REGRESSION) < 0.002
    assert disagreements / trials < 0.003, disagreements
    assert early / trials > 0.8  # most sets are well clear of the limit
    for change in (-0.03, 0.08):  # a typical clear set: one round
        before, after, keys = _drawn_set(random.Random(1), 512, change, 0.03)
        rounds, asked = _rounds(before, after, keys)
        assert asked == [128, 128] and (rounds.z < 0) == (change < MAX_REGRESSION)


def test_a_set_at_the_limit_is_measured_whole_and_judged_exactly():
    before, after, keys = _drawn_set(random.Random(2), 300, MAX_REGRESSION, 0.05)
    rounds, asked = _rounds(before, after, keys)
    assert sorted(rounds.rows) == list(range(300)) and asked == [128, 128, 128, 128, 44, 44]
    assert math.isinf(rounds.z) and (rounds.z < 0) == _whole_set_passes(before, after)


def test_rows_come_in_the_order_of_their_keys_for_every_model():
    keys = ["c", "a", "b"]
    assert measuring_order(keys) == [1, 2, 0]
    rounds, _ = _rounds([(1.0, 1)] * 3, [(1.0, 1)] * 3, keys, round_rows=1)  # all alike: no round can tell
    assert rounds.rows == [1, 2, 0]


def test_rounds_off_measure_every_row_at_once():
    before, after, keys = _drawn_set(random.Random(3), 200, -0.05, 0.02)
    for round_rows, decisive_z in ((0, 3.0), (128, 0.0)):
        rounds, asked = _rounds(before, after, keys, round_rows, decisive_z)
        assert asked == [200, 200] and len(rounds.rows) == 200


def test_the_finite_population_correction_and_non_finite_numbers():
    before = [(10.0, 5)] * 4
    after = [(9.0, 5), (11.0, 5), (9.5, 5), (10.5, 5)]
    # e = after - 1.02 before = -1.2, 0.8, -0.7, 0.3: mean -0.2, sample variance 2.5 / 3; half the set measured
    expected = -0.2 / math.sqrt(2.5 / 3 / 4 * (1 - 4 / 8))
    assert abs(regression_z(after, before, 8, MAX_REGRESSION) - expected) < 1e-9
    assert regression_z(after, before, 4, MAX_REGRESSION) == -math.inf  # every row: exact
    assert regression_z([(math.inf, 5)] + after[1:], before, 8, MAX_REGRESSION) == math.inf
    assert regression_z(after, [(math.nan, 5)] + before[1:], 8, MAX_REGRESSION) == -math.inf
    assert regression_z(after[:1], before[:1], 8, MAX_REGRESSION) == 0.0
