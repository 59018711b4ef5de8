"""Batches built to a token budget (``hyperparams.max_tokens_per_batch``) instead of a row count.

With a fixed ``batch_size``, a step of four one-line replies does a fraction of the work of a step
of four long ones, and the fixed cost of a step (optimizer, logging, kernel launches) is paid on
few tokens. Grouping consecutive examples until the next one would exceed the budget makes every
step carry about the same number of tokens, so short examples fill the step.

Neither transformers nor TRL offers this as something to reuse: transformers' samplers
(``group_by_length``, ``batch_rebalance``) keep a fixed number of examples per step, and TRL's
best-fit-decreasing packing lives in TRL (a benchmark-only dependency here) and reorders the data.
So the grouping is done on the dataset: each row of the grouped dataset is one step's examples,
the ``Trainer`` takes one row per step, and :class:`GroupCollator` unpacks the row for the usual
collator (padding-free or padded). Data order is kept; the ``Trainer``'s sampler shuffles groups.
"""

from __future__ import annotations

from typing import Any, Callable

from datasets import Dataset


def group_indices(lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive runs of example indices whose lengths add up to at most ``budget``.

    An example longer than the budget gets a group of its own (config validation makes
    ``max_tokens_per_batch >= max_length``, so this only happens when called directly).
    """
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, length in enumerate(lengths):
        if current and used + length > budget:
            groups.append(current)
            current, used = [], 0
        current.append(index)
        used += length
    if current:
        groups.append(current)
    return groups


def group_by_token_budget(dataset: Dataset, budget: int) -> Dataset:
    """A dataset whose row ``i`` holds the features of step ``i`` as lists of examples."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    columns = dataset.column_names
    rows = dataset.to_dict()
    return Dataset.from_dict(
        {name: [[rows[name][i] for i in group] for group in group_indices(lengths, budget)] for name in columns}
    )


class GroupCollator:
    """Unpacks grouped rows into examples and hands them to ``collator``.

    Rows that are single examples (an eval set, which is not grouped) pass through unchanged.
    """

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        self.collator = collator

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        examples = []
        for row in rows:
            if row["input_ids"] and isinstance(row["input_ids"][0], list):
                examples.extend(dict(zip(row, values)) for values in zip(*row.values()))
            else:
                examples.append(row)
        return self.collator(examples)
