"""Batches built to a token budget (``hyperparams.max_tokens_per_batch``) instead of a row count.

With a fixed ``batch_size``, a step of four one-line replies does a fraction of the work of a step
of four long ones, and the fixed cost of a step (optimizer, logging, kernel launches) is paid on
few tokens. Grouping consecutive examples until the next one would exceed the budget makes every
step carry about the same number of tokens, so short examples fill the step.

Neither transformers nor TRL offers this as something to reuse: transformers' samplers
(``group_by_length``, ``batch_rebalance``) keep a fixed number of examples per step, and TRL's
best-fit-decreasing packing lives in TRL (a benchmark-only dependency here) and reorders the data.
So the grouping is done here: :class:`TokenBudgetSteps` is a dataset whose item ``i`` is step
``i``'s examples, the ``Trainer`` takes one item per step, and :class:`GroupCollator` unpacks it for
the usual collator (padding-free or padded). Data order is kept; the ``Trainer``'s sampler shuffles
steps. Only where each step starts is kept in memory (8 bytes a step): the examples are read from
the memory-mapped dataset when their step comes, so memory does not grow with the file.
"""

from __future__ import annotations

from array import array
from typing import Any, Callable, Iterable

import numpy as np
import torch.utils.data
from datasets import Dataset

from trainer.data.dataset import example_lengths


def step_starts(lengths: Iterable[int], budget: int) -> np.ndarray:
    """Where each step starts among consecutive examples whose lengths add up to at most ``budget``,
    followed by the number of examples: step ``i`` is ``starts[i]:starts[i + 1]``.

    An example longer than the budget gets a step of its own (config validation makes
    ``max_tokens_per_batch >= max_length``, so this only happens when called directly).
    """
    starts = array("q", [0])
    used = count = 0
    for count, length in enumerate(lengths, 1):
        if count > 1 and used + length > budget:
            starts.append(count - 1)
            used = 0
        used += length
    if count:
        starts.append(count)
    return np.frombuffer(starts, dtype=np.int64)


class TokenBudgetSteps(torch.utils.data.Dataset):
    """Step ``i``'s examples of ``dataset`` as one item: a dict of columns, each a list of examples."""

    def __init__(self, dataset: Dataset, budget: int):
        self.dataset = dataset
        self.starts = step_starts(
            (int(length) for batch in example_lengths(dataset) for length in batch.to_numpy()), budget
        )

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, index: int) -> dict[str, list[Any]]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.dataset[int(self.starts[index]):int(self.starts[index + 1])]


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
