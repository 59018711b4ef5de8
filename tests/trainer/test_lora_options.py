"""``lora.target_modules: all-linear``, ``use_rslora``, ``use_dora`` and ``modules_to_save`` reach PEFT, the
saved adapter and its record, and a continuing run; the lineage guard and resume check refuse changing them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer

from core.daemon.config_guard import lineage_problems
from core.train import TRAINING_INFO_FILENAME, UltimateTrainer
from tests.conftest import chat_rows, write_jsonl
from trainer.checkpoints.markers import write_completion_marker
from trainer.checkpoints.resume import ResumeError, check_resume_compatible
from trainer.config import TrainConfig, config_to_dict, parse_config
from trainer.model.loading import load_model

LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def _options(tiny_config: dict) -> dict:
    raw = json.loads(json.dumps(tiny_config))
    raw["lora"].update(target_modules="all-linear", use_rslora=True, use_dora=True, modules_to_save=["embed_tokens"])
    raw["hyperparams"]["max_steps"] = 2
    return raw


def _adapted(model) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, LoraLayer)}


@pytest.fixture(scope="module")
def trained(tiny_config_module, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora-options")
    config = parse_config(_options(tiny_config_module), Path("config.json"))
    job = UltimateTrainer(config, write_jsonl(tmp / "chat.jsonl", chat_rows(8)), base_dir=tmp,
                          model_source=config.base_model, output_dir=tmp / "ckpt", device="cpu")
    job.setup()
    before = {n: p.detach().clone() for n, p in job.model.named_parameters() if p.requires_grad}
    job.save(tmp / "adapter", job.train())
    return config, job, before, tmp / "adapter"


@pytest.fixture(scope="module")
def tiny_config_module(tiny_model_dir) -> dict:
    return {
        "base_model": str(tiny_model_dir),
        "method": "lora",
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"]},
        "hyperparams": {"fp_precision": "fp32", "max_length": 128, "batch_size": 4, "learning_rate": 5e-3,
                        "warmup_ratio": 0.0, "use_gradient_checkpointing": False, "seed": 0},
        "eval": {"split_ratio": 0.0},
    }


def test_every_linear_layer_but_the_head_gets_a_dora_adapter_with_rslora_scaling(trained):
    _, job, _, _ = trained
    layers = [m for m in job.model.modules() if isinstance(m, LoraLayer)]

    assert _adapted(job.model) == LINEAR
    assert all(layer.scaling["default"] == pytest.approx(8 / math.sqrt(4)) for layer in layers)
    assert all("default" in layer.lora_magnitude_vector for layer in layers)


def test_modules_to_save_train_in_full_and_every_trainable_part_changed(trained):
    _, job, before, _ = trained
    names = set(before)

    assert any("embed_tokens.modules_to_save" in n for n in names)
    assert any("lora_magnitude_vector" in n for n in names)
    after = dict(job.model.named_parameters())
    changed = {n for n in names if not torch.equal(after[n].detach(), before[n])}
    assert any("embed_tokens" in n for n in changed) and any("lora_B" in n for n in changed)


def test_the_saved_adapter_and_its_record_hold_the_options(trained):
    _, _, _, adapter = trained
    saved = json.loads((adapter / "adapter_config.json").read_text())
    recorded = json.loads((adapter / TRAINING_INFO_FILENAME).read_text())["config"]["lora"]

    assert {name.rsplit(".", 1)[-1] for name in saved["target_modules"]} == LINEAR
    assert (saved["use_rslora"], saved["use_dora"], saved["modules_to_save"]) == (True, True, ["embed_tokens"])
    assert recorded["target_modules"] == "all-linear"
    assert (recorded["use_rslora"], recorded["use_dora"], recorded["modules_to_save"]) == (True, True, ["embed_tokens"])


def test_a_continuing_run_loads_the_same_trainable_adapter(trained):
    config, job, _, adapter = trained

    model, _ = load_model(str(adapter), config, adapter.parent, "sdpa")

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in job.model.named_parameters() if p.requires_grad}
    assert _adapted(model) == LINEAR


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"use_dora": True}, "lora.use_dora False -> True"),
        ({"use_rslora": True}, "lora.use_rslora False -> True"),
        ({"modules_to_save": ["lm_head"]}, "lora.modules_to_save [] -> ['lm_head']"),
        ({"target_modules": "all-linear"}, "lora.target_modules ['q_proj', 'k_proj', 'v_proj', 'o_proj'] -> all-linear"),
    ],
)
def test_the_lineage_guard_refuses_a_change_of_adapter_options(change, problem, tmp_path):
    trained_with = config_to_dict(TrainConfig())
    config = TrainConfig.model_validate({"lora": change})

    assert lineage_problems(config, trained_with, tmp_path) == [problem]


def test_a_snapshot_from_before_the_options_existed_continues_under_their_defaults(tmp_path):
    trained_with = config_to_dict(TrainConfig())
    for key in ("use_dora", "use_rslora", "modules_to_save"):
        del trained_with["lora"][key]
    trained_with["lora"]["target_modules"] = ["v_proj", "o_proj", "q_proj", "k_proj"]  # order means nothing

    assert lineage_problems(TrainConfig(), trained_with, tmp_path) == []


def test_target_modules_that_match_no_layer_are_named_in_a_warning(tiny_config_module, caplog):
    raw = json.loads(json.dumps(tiny_config_module))
    raw["lora"]["target_modules"] = ["q_proj", "qkv_proj"]
    config = parse_config(raw, Path("config.json"))

    load_model(config.base_model, config, Path("."), "sdpa")

    assert "['qkv_proj'] match no layer" in caplog.text


@pytest.mark.parametrize("key", ["use_dora", "use_rslora"])
def test_a_step_checkpoint_does_not_resume_under_other_adapter_options(key, tmp_path):
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "adapter_model.safetensors").write_bytes(b"w")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    write_completion_marker(checkpoint, config_text="{}", config=TrainConfig(), model_config={"hidden_size": 64})

    with pytest.raises(ResumeError, match=rf"lora\.{key}: checkpoint False, now True"):
        check_resume_compatible(checkpoint, TrainConfig.model_validate({"lora": {key: True}}), {"hidden_size": 64})
