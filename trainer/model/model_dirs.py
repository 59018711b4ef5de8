"""Is this directory a complete model? Checks a saved model or adapter before anything loads it.

A directory passes when it holds everything ``from_pretrained`` needs, every file non-empty:

* a full Hugging Face model: ``config.json``, a tokenizer and weights (one ``model.safetensors`` or
  ``pytorch_model.bin``, or a sharded index whose every shard is present);
* a LoRA/PEFT adapter: ``adapter_config.json`` and ``adapter_model.safetensors``.

Safetensors files are also checked against their own header, so a file cut short by an
interrupted copy fails instead of breaking a training run later.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelKind = Literal["full", "adapter"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# In the order transformers prefers them; the first one present is the one that gets loaded.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# Any one of these sets is a loadable tokenizer: fast (tokenizers), SentencePiece/tiktoken, or a
# slow BPE or WordPiece vocabulary.
TOKENIZER_FILE_SETS = (
    ("tokenizer.json",),
    ("tokenizer.model",),
    ("vocab.json", "merges.txt"),
    ("vocab.txt",),
)


class ModelDirError(ValueError):
    """One reason a directory is not a complete model; the message names the file."""


@dataclass(frozen=True)
class ModelDirCheck:
    """Outcome of :func:`check_model_dir`.

    Attributes:
        ok: the directory holds a complete model or adapter.
        kind: ``"full"`` or ``"adapter"`` when ``ok``, else None.
        reason: what was found when ``ok``; otherwise what is wrong and which file.
    """

    ok: bool
    kind: ModelKind | None
    reason: str


def check_model_dir(path: str | Path) -> ModelDirCheck:
    """Check that ``path`` is a complete full model or LoRA adapter directory.

    A directory with ``adapter_config.json`` is checked as an adapter, any other as a full model.
    """
    path = Path(path)
    if not path.exists():
        return ModelDirCheck(False, None, f"{path} does not exist")
    if not path.is_dir():
        return ModelDirCheck(False, None, f"{path} is not a directory")
    try:
        if (path / ADAPTER_CONFIG).exists():
            return ModelDirCheck(True, "adapter", _check_adapter(path))
        return ModelDirCheck(True, "full", _check_full(path))
    except ModelDirError as exc:
        return ModelDirCheck(False, None, f"{path}: {exc}")


def is_valid_model_dir(path: str | Path) -> bool:
    """True when ``path`` is a complete full model or LoRA adapter (see :func:`check_model_dir`)."""
    return check_model_dir(path).ok


def _check_adapter(path: Path) -> str:
    adapter_config = _read_json(path / ADAPTER_CONFIG)
    if "peft_type" not in adapter_config:
        raise ModelDirError(f"{ADAPTER_CONFIG} has no 'peft_type'; it is not a PEFT adapter config")
    _check_safetensors(path / ADAPTER_WEIGHTS)
    return f"{adapter_config['peft_type']} adapter with {ADAPTER_WEIGHTS}"


def _check_full(path: Path) -> str:
    _read_json(path / "config.json")
    tokenizer = _check_tokenizer(path)
    weights = next((name for name in WEIGHT_FILES if (path / name).exists()), None)
    if weights is None:
        raise ModelDirError(f"no weights; expected one of {', '.join(WEIGHT_FILES)}")
    if weights.endswith(".index.json"):
        shards = _check_shards(path, weights)
        return f"full model, tokenizer {tokenizer}, {len(shards)} weight shards"
    if weights.endswith(".safetensors"):
        _check_safetensors(path / weights)
    else:
        _check_non_empty(path / weights)
    return f"full model, tokenizer {tokenizer}, weights {weights}"


def _check_tokenizer(path: Path) -> str:
    for names in TOKENIZER_FILE_SETS:
        if all((path / name).exists() for name in names):
            for name in names:
                if name.endswith(".json"):
                    _read_json(path / name)
                else:
                    _check_non_empty(path / name)
            if (path / "tokenizer_config.json").exists():
                _read_json(path / "tokenizer_config.json")
            return " + ".join(names)
    wanted = " or ".join(" + ".join(names) for names in TOKENIZER_FILE_SETS)
    raise ModelDirError(f"no tokenizer files; expected {wanted}")


def _check_shards(path: Path, index_name: str) -> list[str]:
    weight_map = _read_json(path / index_name).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelDirError(f"{index_name} has no 'weight_map'; the index is incomplete")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if index_name.startswith("model.safetensors"):
            _check_safetensors(path / shard)
        else:
            _check_non_empty(path / shard)
    return shards


def _check_non_empty(file: Path) -> int:
    """Return the size of ``file``; raise if it is missing or empty."""
    if not file.is_file():
        raise ModelDirError(f"{file.name} is missing")
    size = file.stat().st_size
    if size == 0:
        raise ModelDirError(f"{file.name} is empty (0 bytes); the save was interrupted, save again")
    return size


def _read_json(file: Path) -> dict:
    _check_non_empty(file)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"{file.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelDirError(f"{file.name} must hold a JSON object")
    return data


def _check_safetensors(file: Path) -> None:
    """Check that the header of a safetensors file parses and its tensors fit in the file."""
    size = _check_non_empty(file)
    with file.open("rb") as handle:
        prefix = handle.read(8)
        header_len = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else size
        if 8 + header_len > size:
            raise ModelDirError(f"{file.name} is truncated or not a safetensors file")
        try:
            header = json.loads(handle.read(header_len))
            end = max(
                (int(t["data_offsets"][1]) for key, t in header.items() if key != "__metadata__"),
                default=0,
            )
        except (ValueError, AttributeError, LookupError, TypeError):
            raise ModelDirError(f"{file.name} has an unreadable safetensors header") from None
    if 8 + header_len + end > size:
        raise ModelDirError(f"{file.name} is truncated ({size} bytes); copy or save it again")
