"""Builders: padding-free batches train exactly like padded ones; config maps onto TrainingArguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, DataCollatorWithFlattening

from profiles import get_profile
from tests.conftest import chat_rows
from trainer.builders import build_collator, build_lora_config, build_training_arguments
from trainer.config import TrainConfig, parse_config
from trainer.data.tokenization import IGNORE_INDEX, tokenize_examples


def config_with(**sections) -> TrainConfig:
    return parse_config(sections, Path("config.json"))


@pytest.fixture(scope="module")
def uneven_features(tiny_tokenizer) -> list[dict]:
    """Four chats whose lengths differ by up to about 4x, so the padded batch is mostly padding."""
    rows = chat_rows(4)
    rows[1]["messages"][-1]["content"] = " ".join(["the quick brown fox jumps over the lazy dog"] * 8)
    rows[3]["messages"] = rows[3]["messages"][1:]  # no system prompt: the shortest one
    features, _ = tokenize_examples(rows, tiny_tokenizer, get_profile("default"), max_length=512)
    lengths = sorted(len(f["input_ids"]) for f in features)
    assert lengths[-1] > 3 * lengths[0]
    return features


def loss_and_grad(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of one forward pass and the gradient it gives the first layer's query projection."""
    model.zero_grad()
    # use_cache=False as in training (TrainingArguments.use_cache): with a KV cache the model does not
    # look for packed sequences in the position ids.
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.detach(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()


def collate(config: TrainConfig, tokenizer, features: list[dict]) -> dict:
    # Collators may modify what they are given; hand each one its own copies.
    return build_collator(config, tokenizer)([{k: list(v) for k, v in f.items()} for f in features])


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_padding_free_batch_gives_the_padded_batch_loss_and_gradients(
    tiny_model_dir, tiny_tokenizer, uneven_features, attention
):
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32, attn_implementation=attention
    ).eval()
    flat = collate(config_with(hyperparams={"padding_free": True}), tiny_tokenizer, uneven_features)
    padded = collate(config_with(hyperparams={"padding_free": False}), tiny_tokenizer, uneven_features)
    total = sum(len(f["input_ids"]) for f in uneven_features)
    assert flat["input_ids"].shape == (1, total)
    assert "attention_mask" not in flat
    assert padded["input_ids"].shape == (4, max(len(f["input_ids"]) for f in uneven_features))

    flat_loss, flat_grad = loss_and_grad(model, flat)
    padded_loss, padded_grad = loss_and_grad(model, padded)

    assert torch.isfinite(flat_loss)
    assert torch.allclose(flat_loss, padded_loss, atol=1e-5)
    assert torch.allclose(flat_grad, padded_grad, atol=1e-6, rtol=1e-4)
    assert flat_grad.abs().sum() > 0


def test_flattened_batch_without_position_ids_mixes_examples(tiny_model_dir, tiny_tokenizer, uneven_features):
    """Without per-example position ids the examples attend to each other: a different loss."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    padded = collate(config_with(hyperparams={"padding_free": False}), tiny_tokenizer, uneven_features)
    mixed = DataCollatorWithFlattening(return_position_ids=False, separator_id=IGNORE_INDEX)(
        [{k: list(v) for k, v in f.items()} for f in uneven_features]
    )

    padded_loss, _ = loss_and_grad(model, padded)
    mixed_loss, _ = loss_and_grad(model, mixed)

    assert not torch.allclose(mixed_loss, padded_loss, atol=1e-5)


def test_padding_free_labels_never_cross_an_example_boundary(tiny_tokenizer, uneven_features):
    flat = collate(config_with(hyperparams={"padding_free": True}), tiny_tokenizer, uneven_features)

    starts = [0]
    for feature in uneven_features[:-1]:
        starts.append(starts[-1] + len(feature["input_ids"]))
    assert (flat["position_ids"][0, starts] == 0).all()
    assert (flat["labels"][0, starts] == IGNORE_INDEX).all()
    trained = sum(sum(label != IGNORE_INDEX for label in f["labels"][1:]) for f in uneven_features)
    assert int((flat["labels"] != IGNORE_INDEX).sum()) == trained


def test_padded_batch_pads_labels_with_the_ignore_index(tiny_tokenizer, uneven_features):
    padded = collate(config_with(hyperparams={"padding_free": False}), tiny_tokenizer, uneven_features)

    for row, feature in enumerate(uneven_features):
        length = len(feature["input_ids"])
        assert padded["labels"][row, :length].tolist() == feature["labels"]
        assert (padded["labels"][row, length:] == IGNORE_INDEX).all()
        assert padded["attention_mask"][row].sum() == length


# --- TrainingArguments --------------------------------------------------------------------------


def test_training_arguments_follow_the_config(tmp_path):
    config = config_with(
        hyperparams={
            "batch_size": 3,
            "gradient_accumulation": 5,
            "learning_rate": 1e-4,
            "epochs": 2.5,
            "warmup_ratio": 0.1,
            "lr_scheduler": "linear",
            "weight_decay": 0.01,
            "max_grad_norm": 0.5,
            "seed": 7,
            "use_gradient_checkpointing": True,
        },
        checkpoint={"save_steps": 25, "log_steps": 3},
    )

    args = build_training_arguments(config, tmp_path / "run", "fp32")

    assert args.output_dir == str(tmp_path / "run")
    assert args.per_device_train_batch_size == 3
    assert args.gradient_accumulation_steps == 5
    assert args.learning_rate == 1e-4
    assert args.num_train_epochs == 2.5
    assert args.max_steps == -1  # epochs decide
    assert args.get_warmup_steps(200) == 20  # 10% of the steps
    assert args.lr_scheduler_type == "linear"
    assert args.weight_decay == 0.01
    assert args.max_grad_norm == 0.5
    assert args.seed == args.data_seed == 7
    assert args.gradient_checkpointing is True
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert args.save_strategy == "steps"
    assert args.save_steps == 25
    assert args.logging_steps == 3
    assert args.bf16 is False and args.fp16 is False
    # Padding-free batches rely on this: with a KV cache the model ignores the packed position ids.
    assert args.use_cache is False
    assert args.remove_unused_columns is False


def test_max_steps_overrides_epochs(tmp_path):
    args = build_training_arguments(config_with(hyperparams={"max_steps": 12}), tmp_path, "fp32")

    assert args.max_steps == 12


def test_defaults_use_the_cosine_schedule_and_decide_checkpointing_by_memory(tmp_path):
    args = build_training_arguments(TrainConfig(), tmp_path, "fp32")
    defaults = TrainConfig()

    assert args.lr_scheduler_type == "cosine"
    assert defaults.hyperparams.use_gradient_checkpointing == "auto"
    assert args.gradient_checkpointing is False  # unresolved auto; UltimateTrainer resolves it
    assert build_training_arguments(TrainConfig(), tmp_path, "fp32", True).gradient_checkpointing is True
    assert args.save_steps == defaults.checkpoint.save_steps
    assert args.logging_steps == defaults.checkpoint.log_steps


@pytest.mark.parametrize(("precision", "bf16", "fp16"), [("bf16", True, False), ("fp16", False, True),
                                                        ("fp32", False, False)])
def test_precision_sets_the_autocast_flags(tmp_path, precision, bf16, fp16):
    args = build_training_arguments(TrainConfig(), tmp_path, precision)

    assert (args.bf16, args.fp16) == (bf16, fp16)


def test_overrides_are_applied_last(tmp_path):
    args = build_training_arguments(TrainConfig(), tmp_path, "fp32", eval_strategy="steps", eval_steps=4)

    assert args.eval_strategy == "steps"
    assert args.eval_steps == 4


def test_lora_config_follows_the_config():
    config = config_with(lora={"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj"]})

    lora = build_lora_config(config)

    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (8, 16, 0.1)
    assert set(lora.target_modules) == {"q_proj"}
    assert lora.task_type == "CAUSAL_LM"
