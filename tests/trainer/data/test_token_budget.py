"""Token-budget batches: every step stays within the budget, data order is kept, memory does not
grow with the file, training runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from datasets.arrow_writer import ArrowWriter
from transformers import DataCollatorWithFlattening

from core.train import UltimateTrainer
from tests.conftest import chat_rows, peak_bytes, write_jsonl
from trainer.config import ConfigError, parse_config
from trainer.data.file_pass import FEATURES
from trainer.data.token_budget import GroupCollator, TokenBudgetSteps, step_starts


def steps_of(lengths: list[int], budget: int) -> list[list[int]]:
    starts = step_starts(lengths, budget).tolist()
    return [list(range(a, b)) for a, b in zip(starts, starts[1:])]


def test_groups_respect_the_budget_and_keep_the_order():
    lengths = [5, 30, 7, 7, 7, 40, 1, 1, 39, 12]

    steps = steps_of(lengths, budget=40)

    assert [i for step in steps for i in step] == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in step) <= 40 for step in steps)
    assert steps == [[0, 1], [2, 3, 4], [5], [6, 7], [8], [9]]
    assert steps_of([], budget=40) == []


def test_an_example_longer_than_the_budget_gets_its_own_group():
    assert steps_of([3, 50, 3], budget=10) == [[0], [1], [2]]


def arrow_dataset(path: Path, rows: int) -> Dataset:
    """A memory-mapped dataset of ``rows`` examples of 5 to 60 tokens, written without a tokenizer."""
    rng = random.Random(rows)
    with ArrowWriter(features=FEATURES, path=str(path)) as writer:
        for _ in range(rows):
            length = rng.randint(5, 60)
            writer.write({"input_ids": [1] * length, "labels": [1] * length})
        writer.finalize()
    return Dataset.from_file(str(path))


def test_steps_are_read_from_the_mapped_file_and_memory_does_not_grow_with_it(tmp_path):
    small, large = arrow_dataset(tmp_path / "small.arrow", 2_000), arrow_dataset(tmp_path / "large.arrow", 20_000)
    seen = {}

    def every_step(dataset: Dataset):
        def work():
            steps = TokenBudgetSteps(dataset, 512)
            seen[len(dataset)] = [steps[i]["input_ids"] for i in range(0, len(steps), len(steps) // 10)], len(steps)
        return work

    small_peak, large_peak = peak_bytes(every_step(small)), peak_bytes(every_step(large))

    sampled, count = seen[20_000]
    starts = steps_of([len(ids) for ids in large["input_ids"]], 512)
    assert count == len(starts)
    assert sampled == [[large[i]["input_ids"] for i in starts[k]] for k in range(0, count, count // 10)]
    # 8 bytes a step stay in memory; the grouped copy this replaced held every row again (about 10x)
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)


def test_collator_unpacks_groups_into_one_padding_free_batch():
    features = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]},
                {"input_ids": [6, 7, 8, 9], "labels": [-100, -100, 8, 9]}]
    grouped = TokenBudgetSteps(Dataset.from_list(features), budget=5)
    flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)

    batch = GroupCollator(flatten)([grouped[0]])

    assert len(grouped) == 2
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert torch.equal(batch["input_ids"], flatten(features[:2])["input_ids"])
    assert GroupCollator(flatten)(features[:2])["input_ids"].tolist() == [[1, 2, 3, 4, 5]]


def test_budget_below_max_length_is_a_config_error():
    with pytest.raises(ConfigError, match="max_tokens_per_batch"):
        parse_config({"hyperparams": {"max_length": 512, "max_tokens_per_batch": 256}}, Path("config.json"))


def test_training_with_a_token_budget_takes_one_group_per_step(tiny_config, tmp_path):
    raw = json.loads(json.dumps(tiny_config))
    raw["hyperparams"].update({"max_tokens_per_batch": 512, "epochs": 1})
    config = parse_config(raw, Path("config.json"))
    data_file = write_jsonl(tmp_path / "chat.jsonl", chat_rows(24))
    job = UltimateTrainer(config, data_file, base_dir=tmp_path, model_source=config.base_model,
                          output_dir=tmp_path / "ckpt")
    job.setup()
    lengths = [len(ids) for ids in job.train_dataset["input_ids"]]
    seen: list[int] = []
    collate = job.trainer.data_collator
    job.trainer.data_collator = lambda rows: seen.append(sum(map(len, (r["input_ids"] for r in rows)))) or collate(rows)

    result = job.train()

    assert result.steps == len(steps_of(lengths, 512)) < len(lengths) // 4
    assert result.examples == len(lengths)
    assert seen and max(seen) <= 512
    assert torch.isfinite(torch.tensor(result.last_loss))
