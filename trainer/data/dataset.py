"""Building the training dataset of one file, with tokenized files cached by content.

Tokenizing chats is the slow part of data preparation (every assistant turn renders the template
twice to find its span), and a file is often trained more than once: a retry after a failure, a
resumed run, the same file dropped again with another config. The features therefore go to
``<base dir>/cache/tokenized/<key>/`` (``datasets`` Arrow files via ``save_to_disk``), where the key
is the SHA-256 of everything that decides them:

* the bytes of the data file;
* the tokenizer (its full serialized form, chat template and special tokens);
* the profile (its name and the system prompt it fills in today);
* ``hyperparams.max_length`` and ``data.on_overlength``;
* the code that shapes the tokens (:func:`token_code_sources`): the source of the data modules that
  read rows, render chats and mask labels, of the profile's module and of the ``profiles`` modules
  it uses, and the versions of ``transformers`` and ``tokenizers``, so that a code change or an
  upgrade never serves features the current code would not make.

A hit loads memory-mapped Arrow files instead of tokenizing. Entries are written to a temporary
folder and renamed into place, so a crash never leaves a half entry; only the
:data:`KEEP_ENTRIES` most recently used entries are kept. The folder can be deleted at any time.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

import tokenizers
import transformers

import trainer.data.chat_masking
import trainer.data.formats
import trainer.data.tokenization
from profiles import Profile
from trainer.config import TrainConfig
from trainer.data.formats import DataFileError, RowError, read_examples
from trainer.data.tokenization import ChatTemplateError, TokenizeStats, fill_system_prompt, tokenize_examples

logger = logging.getLogger(__name__)

CACHE_DIRNAME = "cache/tokenized"
KEEP_ENTRIES = 16
STATS_FILENAME = "trainctl_stats.json"


@dataclass
class TrainData:
    """The features of one file and how they were obtained."""

    dataset: Dataset
    stats: TokenizeStats
    cache_hit: bool
    seconds: float
    """Wall time of reading + tokenizing, or of loading the cached features."""


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return json.dumps([vocab, tokenizer.chat_template, tokenizer.all_special_tokens, tokenizer.eos_token_id])


TOKEN_SHAPING_MODULES = (trainer.data.formats, trainer.data.tokenization, trainer.data.chat_masking)
"""The data modules whose code decides the features of a file."""


def token_code_sources(profile: Profile) -> dict[str, str]:
    """Module name to source of all code that shapes the tokens, plus the tokenizer libraries' versions.

    That is :data:`TOKEN_SHAPING_MODULES`, the profile's module, and every ``profiles`` module that
    one takes something from (a shared transform, the ``Example`` type).
    """
    profile_module = inspect.getmodule(type(profile))
    modules = {module.__name__: module for module in (*TOKEN_SHAPING_MODULES, profile_module)}
    for value in vars(profile_module).values():
        owner = inspect.getmodule(value)
        if owner is not None and owner.__name__.startswith("profiles."):
            modules[owner.__name__] = owner
    sources = {name: inspect.getsource(module) for name, module in sorted(modules.items())}
    sources["versions"] = f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}"
    return sources


def cache_key(data_file: Path, tokenizer: Any, profile: Profile, config: TrainConfig) -> str:
    """SHA-256 of the file bytes, tokenizer, profile and tokenization settings (see module doc)."""
    digest = hashlib.sha256()
    with Path(data_file).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    template = profile.system_prompt_template()
    settings = {
        "profile": profile.name,
        "system_prompt": fill_system_prompt(template) if template is not None else None,
        "code": token_code_sources(profile),
        "max_length": config.hyperparams.max_length,
        "on_overlength": config.data.on_overlength,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(_tokenizer_fingerprint(tokenizer).encode())
    return digest.hexdigest()


def _tokenize(data_file: Path, tokenizer: Any, profile: Profile, config: TrainConfig):
    parsed = read_examples(data_file, profile)
    try:
        features, stats = tokenize_examples(
            parsed.examples, tokenizer, profile, config.hyperparams.max_length, config.data.on_overlength
        )
    except ChatTemplateError as exc:
        raise ChatTemplateError(f"{data_file}: {exc}") from exc
    return features, stats, parsed.errors


def _save(entry: Path, features: list[dict], stats: TokenizeStats, errors: list[RowError]) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    Dataset.from_list(features).save_to_disk(str(staging / "data"))
    info = {"stats": asdict(stats), "errors": [error.to_dict() for error in errors]}
    (staging / STATS_FILENAME).write_text(json.dumps(info))
    try:
        os.replace(staging, entry)
    except OSError:  # another process stored the same key first; theirs is identical
        shutil.rmtree(staging, ignore_errors=True)


def _prune(cache_dir: Path) -> None:
    entries = sorted(
        (p for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime, reverse=True,
    )
    for stale in entries[KEEP_ENTRIES:]:
        shutil.rmtree(stale, ignore_errors=True)


def build_train_data(
    data_file: Path, tokenizer: Any, profile: Profile, config: TrainConfig, cache_dir: Path | None
) -> TrainData:
    """Features of ``data_file``: from the cache when the same inputs were tokenized before.

    Args:
        cache_dir: the cache folder (usually ``<base dir>/cache/tokenized``); None disables caching.

    Raises:
        DataFileError: the file has no example left to train on.
    """
    started = time.perf_counter()
    entry = cache_dir / cache_key(data_file, tokenizer, profile, config) if cache_dir else None
    if entry is not None and entry.is_dir():
        info = json.loads((entry / STATS_FILENAME).read_text())
        dataset, stats = Dataset.load_from_disk(str(entry / "data")), TokenizeStats(**info["stats"])
        errors = [RowError(**error) for error in info["errors"]]
        os.utime(entry)
        hit = True
    else:
        features, stats, errors = _tokenize(data_file, tokenizer, profile, config)
        if not features:
            raise DataFileError(f"{data_file}: no usable example to train on")
        dataset, hit = Dataset.from_list(features), False
        if entry is not None:
            _save(entry, features, stats, errors)
            _prune(cache_dir)
    for error in errors:
        logger.warning("%s: skipping line %d: %s", data_file.name, error.line, error.reason)
    seconds = time.perf_counter() - started
    logger.info(
        "%s: %d examples, %d tokens (%d trained), %d truncated, %d dropped; %s in %.2f s",
        data_file.name, stats.examples, stats.total_tokens, stats.trained_tokens, stats.truncated,
        stats.dropped + stats.no_trained_tokens, "loaded from cache" if hit else "tokenized", seconds,
    )
    if stats.per_turn_conversations:
        logger.info(
            "%s: %d conversations train one sequence per reply: the chat template renders earlier turns "
            "differently as a conversation goes on (docs/models.md)", data_file.name, stats.per_turn_conversations,
        )
    return TrainData(dataset, stats, hit, seconds)
