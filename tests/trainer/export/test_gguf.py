"""GGUF export: the file written for llama.cpp reads back (transformers' GGUF loader) as the trained model."""

from __future__ import annotations

import copy

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from tests.tiny_models import build_tiny_adapter_dir, build_tiny_tokenizer
from trainer.export.checks import prompt_ids
from trainer.export.errors import ExportError
from trainer.export.gguf_file import check_architecture, check_gguf, write_gguf
from trainer.export.gguf_vocab import build_vocab, pre_tokenizer_name
from trainer.export.merged import merge
from trainer.inference.loading import load_trained


@pytest.fixture(scope="module")
def merged(tiny_model_dir, tmp_path_factory):
    adapter = build_tiny_adapter_dir(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "adapter", seed=1)
    loaded = load_trained(adapter, str(tiny_model_dir))
    model, reference = merge(loaded)
    return model, loaded.tokenizer, reference


@pytest.mark.parametrize("precision", ["f32", "f16", "bf16", "q8_0"])
def test_gguf_reads_back_as_the_trained_model(merged, tmp_path, precision):
    model, tokenizer, reference = merged
    path = tmp_path / "model.gguf"
    write_gguf(model, tokenizer, path, precision, "tiny")

    result = check_gguf(path, copy.deepcopy(model), tokenizer, reference, precision)

    assert result.relative_error <= {"f32": 1e-5, "f16": 1e-2, "bf16": 5e-2, "q8_0": 1e-1}[precision]
    if precision == "f32":
        assert result.same_greedy_reply
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    assert loaded.config.tie_word_embeddings and loaded.config.num_key_value_heads == 2


def test_a_file_with_unpermuted_query_and_key_rows_fails_the_read_back(merged, tmp_path, monkeypatch):
    model, tokenizer, reference = merged
    monkeypatch.setattr("trainer.export.gguf_file._permuted", lambda name, weights, config: weights)
    write_gguf(model, tokenizer, tmp_path / "model.gguf", "f32", "tiny")
    with pytest.raises(ExportError, match="read back is not the model written"):
        check_gguf(tmp_path / "model.gguf", copy.deepcopy(model), tokenizer, reference, "f32")


def test_gguf_metadata_holds_tokenizer_chat_template_and_types(merged, tmp_path):
    model, tokenizer, _ = merged
    path = tmp_path / "model.gguf"
    write_gguf(model, tokenizer, path, "q8_0", "tiny")
    reader = gguf.GGUFReader(path)

    def field(key):
        return reader.fields[key].contents()

    assert field("general.architecture") == "llama"
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt2"
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert field("tokenizer.ggml.eos_token_id") == im_end and field("tokenizer.ggml.eot_token_id") == im_end
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    assert len(tokens) == model.config.vocab_size and tokens[im_end] == "<|im_end|>"
    assert types[im_end] == gguf.TokenType.CONTROL and types[10] == gguf.TokenType.NORMAL
    tensor_types = {t.name: t.tensor_type for t in reader.tensors}
    assert tensor_types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert tensor_types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert "output.weight" not in tensor_types  # tied to token_embd, as in the model
    read_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    assert torch.equal(prompt_ids(read_tokenizer), prompt_ids(tokenizer))


def test_an_architecture_gguf_export_does_not_know_is_named(tmp_path):
    tokenizer = build_tiny_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    model = Qwen2ForCausalLM(config)
    with pytest.raises(ExportError, match="qwen2"):
        write_gguf(model, tokenizer, tmp_path / "model.gguf", "f16", "qwen")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ExportError, match="qwen2"):
        check_architecture(config)


def test_pre_tokenizer_names_follow_the_tokenizer_and_unknown_ones_are_refused():
    assert pre_tokenizer_name({"type": "ByteLevel", "use_regex": True}) == "gpt2"
    smollm = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                    {"type": "ByteLevel", "use_regex": True}]}
    assert pre_tokenizer_name(smollm) == "smollm"
    with pytest.raises(ExportError, match="cannot name for llama.cpp"):
        pre_tokenizer_name({"type": "Whitespace"})


def test_a_tokenizer_larger_than_the_model_is_refused():
    with pytest.raises(ExportError, match="embedding rows"):
        build_vocab(build_tiny_tokenizer(), 10)
