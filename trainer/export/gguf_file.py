"""Writing a merged Llama-family model as one GGUF file for llama.cpp and Ollama.

Follows llama.cpp's ``convert_hf_to_gguf.py`` for ``LlamaForCausalLM``: the hyperparameters under
``llama.*``, tensors renamed with gguf-py's own name map, the query and key projections permuted
to llama.cpp's rotary layout (transformers' GGUF loader undoes the same permutation), 1-D tensors
(the norms) in F32 and every matrix in the chosen type. The tokenizer goes in as well
(``trainer.export.gguf_vocab``), so the file is all llama.cpp or Ollama need.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from trainer.export.checks import EXACT, TOLERANCES, CheckResult, Reference, check_same_tokens, compare
from trainer.export.errors import ExportError
from trainer.export.gguf_vocab import build_vocab

logger = logging.getLogger(__name__)

# transformers model_type -> gguf-py architecture with the same tensor layout.
SUPPORTED_MODEL_TYPES = {"llama": gguf.MODEL_ARCH.LLAMA}
# --dtype / --quant name -> (type of every matrix, llama.cpp file type)
TENSOR_TYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}


def check_architecture(config: Any) -> gguf.MODEL_ARCH:
    """The gguf-py architecture of a transformers config.

    Raises:
        ExportError: the architecture, or a feature of it (biases, rope scaling), is not supported.
    """
    name = (getattr(config, "architectures", None) or [config.model_type])[0]
    arch = SUPPORTED_MODEL_TYPES.get(config.model_type)
    if arch is None:
        raise ExportError(
            f"GGUF export does not support the {name} architecture (model_type {config.model_type!r}; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}); export --format merged and convert it with "
            "llama.cpp's convert_hf_to_gguf.py"
        )
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    problems = [f"attention_bias={config.attention_bias}"] if getattr(config, "attention_bias", False) else []
    problems += [f"mlp_bias={config.mlp_bias}"] if getattr(config, "mlp_bias", False) else []
    problems += [f"rope_type={rope_type!r}"] if rope_type != "default" else []
    if problems:
        raise ExportError(f"GGUF export supports plain {name} models; this one has {', '.join(problems)}")
    return arch


def write_gguf(model: Any, tokenizer: Any, path: Path, tensor_type: str, name: str) -> None:
    """Write ``model`` (a merged, unwrapped causal LM) and ``tokenizer`` to the GGUF file ``path``.

    Args:
        model: a transformers model whose architecture passes :func:`check_architecture`.
        tokenizer: its byte-level BPE tokenizer with the chat template.
        path: the file to write.
        tensor_type: ``f32``, ``f16``, ``bf16`` or ``q8_0`` for the matrices.
        name: ``general.name`` of the model.

    Raises:
        ExportError: unsupported architecture or tokenizer.
    """
    config = model.config
    arch = check_architecture(config)
    vocab = build_vocab(tokenizer, config.vocab_size)
    qtype, file_type = TENSOR_TYPES[tensor_type]
    # Tensors are spooled to a temporary file as they are added, not all held in memory until written.
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch], use_temp_file=True)
    _add_hyperparameters(writer, config, name, file_type)
    vocab.add_to(writer)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: llama.cpp reuses token_embd.weight, as transformers does
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"no GGUF name for tensor {hf_name!r} of a {config.model_type} model")
        data, raw_type = _encode(_permuted(hf_name, tensor.float(), config).numpy(), qtype)
        writer.add_tensor(gguf_name, data, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    logger.info("wrote %s (%s, %d tensors)", path, tensor_type, len(model.state_dict()))


def check_gguf(path: Path, model: Any, tokenizer: Any, reference: Reference, tensor_type: str) -> CheckResult:
    """Read the GGUF file back with transformers' GGUF loader and check it.

    ``model`` (the merged model the file was written from) is rounded in place to what the file
    stores, and the file must give exactly its logits; then the file is compared with the trained
    model (``reference``) within the tolerance of ``tensor_type``.

    Raises:
        ExportError: the tokenizer or the weights read back are not the ones written, or the
            precision moved the logits more than it allows.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_same_tokens(AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False), reference, path.name)
    qtype = TENSOR_TYPES[tensor_type][0]
    with torch.no_grad():
        for parameter in model.parameters():
            data, raw_type = _encode(parameter.detach().float().numpy(), qtype)
            decoded = data if raw_type == gguf.GGMLQuantizationType.F32 else gguf.quants.dequantize(data, raw_type)
            parameter.copy_(torch.from_numpy(np.asarray(decoded, dtype=np.float32).reshape(parameter.shape)))
    intended = Reference.of(model, tokenizer)
    read = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, trust_remote_code=False)
    compare(read, intended, EXACT, f"{path.name} read back is not the model written")
    return compare(read, reference, TOLERANCES[tensor_type], f"{path.name} in {tensor_type} strays from the trained model")


def _add_hyperparameters(writer: gguf.GGUFWriter, config: Any, name: str, file_type: int) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope_theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta") or getattr(config, "rope_theta", 10000.0)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _permuted(hf_name: str, weights: torch.Tensor, config: Any) -> torch.Tensor:
    """Query/key rows reordered from HF's rotary halves to llama.cpp's interleaved pairs."""
    if hf_name.endswith("q_proj.weight"):
        heads = config.num_attention_heads
    elif hf_name.endswith("k_proj.weight"):
        heads = config.num_key_value_heads
    else:
        return weights
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _encode(array: np.ndarray, qtype: gguf.GGMLQuantizationType) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """The tensor's bytes in ``qtype``; vectors stay F32, and a matrix Q8_0 cannot split stays F16."""
    if array.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
        return array.astype(np.float32), gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16), gguf.GGMLQuantizationType.F16
    if qtype == gguf.GGMLQuantizationType.Q8_0 and array.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return array.astype(np.float16), gguf.GGMLQuantizationType.F16
    return gguf.quants.quantize(array, qtype), qtype
