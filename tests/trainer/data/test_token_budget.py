"""Token-budget batches: every step stays within the budget, data order is kept, training runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorWithFlattening

from core.train import UltimateTrainer
from tests.conftest import chat_rows, write_jsonl
from trainer.config import ConfigError, parse_config
from trainer.data.token_budget import GroupCollator, group_by_token_budget, group_indices


def test_groups_respect_the_budget_and_keep_the_order():
    lengths = [5, 30, 7, 7, 7, 40, 1, 1, 39, 12]

    groups = group_indices(lengths, budget=40)

    assert [i for group in groups for i in group] == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in group) <= 40 for group in groups)
    assert groups == [[0, 1], [2, 3, 4], [5], [6, 7], [8], [9]]


def test_an_example_longer_than_the_budget_gets_its_own_group():
    assert group_indices([3, 50, 3], budget=10) == [[0], [1], [2]]


def test_collator_unpacks_groups_into_one_padding_free_batch():
    features = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]},
                {"input_ids": [6, 7, 8, 9], "labels": [-100, -100, 8, 9]}]
    grouped = group_by_token_budget(Dataset.from_list(features), budget=5)
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

    assert result.steps == len(group_indices(lengths, 512)) < len(lengths) // 4
    assert result.examples == len(lengths)
    assert seen and max(seen) <= 512
    assert torch.isfinite(torch.tensor(result.last_loss))
