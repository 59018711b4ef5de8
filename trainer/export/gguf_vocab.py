"""A byte-level BPE tokenizer as GGUF metadata (``tokenizer.ggml.*``), as llama.cpp expects it.

Mirrors what llama.cpp's ``convert_hf_to_gguf.py`` writes for a gpt2-style tokenizer: every id up
to the model's vocabulary size (ids the tokenizer lacks become ``[PADn]`` placeholders, type
UNUSED), added special tokens typed CONTROL and other added tokens USER_DEFINED, the merges as
``"a b"`` strings, the special token ids and the chat template. ``tokenizer.ggml.pre`` names how
llama.cpp splits text before the merges; it is read off the tokenizer's own pre-tokenizer, so a
GGUF splits text the way training did, and a pre-tokenizer without a known name is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gguf

from trainer.export.errors import ExportError
from trainer.inference.turns import end_of_turn_id

# Llama 3's split regex, as its tokenizer.json spells it.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass
class GgufVocab:
    """Everything ``tokenizer.ggml.*`` and ``tokenizer.chat_template`` hold."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int]
    add_bos: bool
    chat_template: str | None

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        """Write the tokenizer metadata into ``writer``."""
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id, "unk": writer.add_unk_token_id,
                  "pad": writer.add_pad_token_id, "eot": writer.add_eot_token_id}
        for name, token_id in self.special_ids.items():
            adders[name](token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(False)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def build_vocab(tokenizer: Any, vocab_size: int) -> GgufVocab:
    """The GGUF tokenizer metadata of a fast byte-level BPE tokenizer for a model of ``vocab_size`` rows.

    Raises:
        ExportError: the tokenizer is not byte-level BPE, has more tokens than the model has rows,
            or splits text in a way llama.cpp has no name for.
    """
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
    if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel":
        raise ExportError(
            f"GGUF export supports byte-level BPE tokenizers (gpt2-style); this one is "
            f"{model.get('type')} with a {decoder.get('type')} decoder. Export --format merged instead"
        )
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise ExportError(f"the tokenizer has id {max(by_id)} but the model only {vocab_size} embedding rows")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return GgufVocab(tokens, [int(t) for t in types], merges, pre_tokenizer_name(spec.get("pre_tokenizer")),
                     _special_ids(tokenizer), _adds_bos(tokenizer), tokenizer.chat_template)


def pre_tokenizer_name(pre: dict | None) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for a ``tokenizer.json`` pre-tokenizer.

    Raises:
        ExportError: it is not one of the known shapes.
    """
    steps = (pre or {}).get("pretokenizers") if (pre or {}).get("type") == "Sequence" else [pre or {}]
    shape = [step.get("type") for step in steps]
    if shape == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2"
    if shape == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if shape == ["Split", "ByteLevel"] and (steps[0].get("pattern") or {}).get("Regex") == _LLAMA3_SPLIT:
        return "llama-bpe"
    raise ExportError(
        f"the tokenizer splits text with {json.dumps(pre)[:200]}, which trainctl cannot name for llama.cpp "
        "(known: GPT-2 byte level, SmolLM digits + byte level, Llama 3 split); export --format merged "
        "and convert it with llama.cpp's convert_hf_to_gguf.py"
    )


def _special_ids(tokenizer: Any) -> dict[str, int]:
    ids = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
        "eot": end_of_turn_id(tokenizer),
    }
    return {name: token_id for name, token_id in ids.items() if token_id is not None}


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS in front of a text (found by encoding one)."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]
