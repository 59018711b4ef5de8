"""``trainer.model.model_dirs``: complete model and adapter directories pass, broken ones fail with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.model.model_dirs import check_model_dir, is_valid_model_dir


@pytest.fixture()
def adapter_dir(tiny_model_dir, tmp_path) -> Path:
    """A LoRA adapter saved by peft on top of the tiny model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


@pytest.fixture()
def sharded_model_dir(tiny_model_dir, tmp_path) -> Path:
    """The tiny model saved in several safetensors shards with an index."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(out, max_shard_size="30KB")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def _shards(model_dir: Path, index: str = "model.safetensors.index.json") -> list[str]:
    return sorted(set(json.loads((model_dir / index).read_text())["weight_map"].values()))


def _assert_fails(path: Path, *words: str) -> None:
    check = check_model_dir(path)
    assert not check.ok
    assert check.kind is None
    assert not is_valid_model_dir(path)
    for word in words:
        assert word in check.reason


def test_full_model_passes(tiny_model_dir):
    check = check_model_dir(tiny_model_dir)
    assert check.ok, check.reason
    assert check.kind == "full"
    assert is_valid_model_dir(tiny_model_dir)


def test_sharded_safetensors_model_passes(sharded_model_dir):
    assert len(_shards(sharded_model_dir)) > 1
    assert not (sharded_model_dir / "model.safetensors").exists()
    check = check_model_dir(sharded_model_dir)
    assert check.ok, check.reason
    assert check.kind == "full"


def test_pytorch_bin_model_passes(tiny_model_copy):
    weights = tiny_model_copy / "model.safetensors"
    torch.save(load_file(weights), tiny_model_copy / "pytorch_model.bin")
    weights.unlink()
    assert check_model_dir(tiny_model_copy).ok


def test_sharded_bin_model_passes_and_needs_every_shard(tiny_model_copy):
    state = load_file(tiny_model_copy / "model.safetensors")
    (tiny_model_copy / "model.safetensors").unlink()
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for shard, keys in halves.items():
        torch.save({key: state[key] for key in keys}, tiny_model_copy / shard)
    weight_map = {key: shard for shard, keys in halves.items() for key in keys}
    index = {"metadata": {}, "weight_map": weight_map}
    (tiny_model_copy / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    assert check_model_dir(tiny_model_copy).ok

    (tiny_model_copy / "pytorch_model-00002-of-00002.bin").unlink()
    _assert_fails(tiny_model_copy, "pytorch_model-00002-of-00002.bin", "missing")


def test_sentencepiece_tokenizer_counts_as_tokenizer(tiny_model_copy):
    (tiny_model_copy / "tokenizer.json").unlink()
    (tiny_model_copy / "tokenizer.model").write_bytes(b"\x0a\x05hello")
    assert check_model_dir(tiny_model_copy).ok


def test_adapter_passes(adapter_dir):
    check = check_model_dir(adapter_dir)
    assert check.ok, check.reason
    assert check.kind == "adapter"
    assert "LORA" in check.reason


def test_missing_directory_fails(tmp_path):
    _assert_fails(tmp_path / "nowhere", "does not exist")


def test_file_instead_of_directory_fails(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    _assert_fails(file, "not a directory")


def test_empty_directory_fails(tmp_path):
    _assert_fails(tmp_path, "config.json", "missing")


@pytest.mark.parametrize(
    "name", ["config.json", "tokenizer.json", "model.safetensors"], ids=lambda name: name
)
def test_missing_file_fails(tiny_model_copy, name):
    (tiny_model_copy / name).unlink()
    _assert_fails(tiny_model_copy, name)


@pytest.mark.parametrize(
    "name", ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"]
)
def test_zero_byte_file_fails(tiny_model_copy, name):
    (tiny_model_copy / name).write_bytes(b"")
    _assert_fails(tiny_model_copy, name, "empty")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json"])
def test_unparsable_json_fails(tiny_model_copy, name):
    (tiny_model_copy / name).write_text('{"model_type": "llama",', encoding="utf-8")
    _assert_fails(tiny_model_copy, name, "not valid JSON")


def test_truncated_safetensors_fails(tiny_model_copy):
    weights = tiny_model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    _assert_fails(tiny_model_copy, "model.safetensors", "truncated")


def test_index_naming_missing_shard_fails(sharded_model_dir):
    last = _shards(sharded_model_dir)[-1]
    (sharded_model_dir / last).unlink()
    _assert_fails(sharded_model_dir, last, "missing")


def test_zero_byte_shard_fails(sharded_model_dir):
    first = _shards(sharded_model_dir)[0]
    (sharded_model_dir / first).write_bytes(b"")
    _assert_fails(sharded_model_dir, first, "empty")


def test_index_without_weight_map_fails(sharded_model_dir):
    (sharded_model_dir / "model.safetensors.index.json").write_text('{"metadata": {}}')
    _assert_fails(sharded_model_dir, "weight_map")


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "adapter_config.json"])
def test_adapter_with_zero_byte_file_fails(adapter_dir, name):
    (adapter_dir / name).write_bytes(b"")
    _assert_fails(adapter_dir, name, "empty")


def test_adapter_without_weights_fails(adapter_dir):
    (adapter_dir / "adapter_model.safetensors").unlink()
    _assert_fails(adapter_dir, "adapter_model.safetensors", "missing")


def test_adapter_with_unparsable_config_fails(adapter_dir):
    (adapter_dir / "adapter_config.json").write_text("{not json", encoding="utf-8")
    _assert_fails(adapter_dir, "adapter_config.json", "not valid JSON")


def test_adapter_config_without_peft_type_fails(adapter_dir):
    (adapter_dir / "adapter_config.json").write_text('{"r": 8}', encoding="utf-8")
    _assert_fails(adapter_dir, "peft_type")
