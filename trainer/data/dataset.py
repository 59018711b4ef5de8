"""Building the training dataset of one file, with tokenized files cached by content.

Tokenizing chats is the slow part of data preparation (every assistant turn renders the template
twice to find its span), and a file is often trained more than once: a retry after a failure, a
resumed run, the same file dropped again with another config. The features therefore go to
``<base dir>/cache/tokenized/<key>/`` (``datasets`` Arrow shards, memory-mapped when trained on),
where the key is the SHA-256 of everything that decides them:

* the bytes of the data file;
* the tokenizer (its full serialized form, chat template and special tokens);
* the profile (its name and the system prompt it fills in today);
* ``hyperparams.max_length`` and ``data.on_overlength``;
* the code that shapes the tokens (:func:`token_code_sources`): the source of the data modules that
  read rows, render chats and mask labels, of the profile's module and of the ``profiles`` modules
  it uses, and the versions of ``transformers`` and ``tokenizers``, so that a code change or an
  upgrade never serves features the current code would not make.

The file is read, tokenized and written in one streaming pass (``trainer/data/file_pass.py``, in
worker processes for a large file, one shard each): one row at a time goes from the JSONL line to
an Arrow shard, and only counts, a histogram of lengths and the first ``MAX_LISTED_ROWS`` bad
rows are kept, so memory does not grow with the file. The
daemon's validation makes that same pass into the same cache (``validate_file(cache_dir=...)``),
so the training child of a validated file, and every retry or resume, loads the features instead
of tokenizing again.

A hit memory-maps the Arrow shards instead of tokenizing. Entries are written to a temporary folder
and renamed into place, so a crash never leaves a half entry; only the :data:`KEEP_ENTRIES` most
recently used entries are kept. The folder can be deleted at any time.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow
import pyarrow.compute
import tokenizers
import transformers
from datasets import Dataset, concatenate_datasets

import trainer.data.chat_masking
import trainer.data.file_pass
import trainer.data.formats
import trainer.data.tokenization
from profiles import Profile
from trainer.config import TrainConfig
from trainer.data.file_pass import SHARD_GLOB, FilePass, tokenize_file
from trainer.data.formats import DataFileError
from trainer.data.tokenization import TokenizeStats, fill_system_prompt

logger = logging.getLogger(__name__)

CACHE_DIRNAME = "cache/tokenized"
KEEP_ENTRIES = 16
STATS_FILENAME = "trainctl_stats.json"
COUNT_BATCH_ROWS = 10_000
"""Rows per Arrow batch when :func:`token_count` sums a dataset's tokens."""


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


TOKEN_SHAPING_MODULES = (
    trainer.data.formats, trainer.data.tokenization, trainer.data.chat_masking, trainer.data.file_pass,
)
"""The data modules whose code decides the features of a file (with this one, which writes them)."""


def token_code_sources(profile: Profile) -> dict[str, str]:
    """Module name to source of all code that shapes the tokens, plus the tokenizer libraries' versions.

    That is :data:`TOKEN_SHAPING_MODULES` and this module, the profile's module, and every
    ``profiles`` module that one takes something from (a shared transform, the ``Example`` type).
    """
    profile_module = inspect.getmodule(type(profile))
    shaping = (*TOKEN_SHAPING_MODULES, sys.modules[__name__], profile_module)
    modules = {module.__name__: module for module in shaping}
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


def cached_pass(
    data_file: Path, tokenizer: Any, profile: Profile, config: TrainConfig, cache_dir: Path
) -> tuple[Path, FilePass, bool]:
    """The cache entry of ``data_file``, what its pass found, and whether it was there already.

    On a miss the file is tokenized into a new entry (see the module doc); on a hit nothing is read
    but the entry's statistics.
    """
    entry = cache_dir / cache_key(data_file, tokenizer, profile, config)
    if entry.is_dir():
        os.utime(entry)
        return entry, FilePass.from_dict(json.loads((entry / STATS_FILENAME).read_text())), True
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
    try:
        found = tokenize_file(data_file, tokenizer, profile, config, staging)
        (staging / STATS_FILENAME).write_text(json.dumps(found.to_dict()))
        os.replace(staging, entry)
    except OSError:
        if not entry.is_dir():
            raise
    finally:  # also when another process stored the same key first: theirs is identical
        shutil.rmtree(staging, ignore_errors=True)
    _prune(cache_dir)
    return entry, found, False


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
        cache_dir: the cache folder (usually ``<base dir>/cache/tokenized``); None disables caching
            (the features are then built in a temporary folder and loaded into memory).

    Raises:
        DataFileError: the file has no example left to train on.
    """
    started = time.perf_counter()
    if cache_dir is not None:
        entry, found, hit = cached_pass(data_file, tokenizer, profile, config, cache_dir)
        dataset = load_features(entry) if found.stats.examples else None
    else:
        with tempfile.TemporaryDirectory(prefix="trainctl-features-") as scratch:
            found, hit = tokenize_file(data_file, tokenizer, profile, config, Path(scratch)), False
            dataset = load_features(Path(scratch), in_memory=True) if found.stats.examples else None
    if not found.stats.examples:
        raise DataFileError(f"{data_file}: no usable example to train on")
    seconds = time.perf_counter() - started
    _log_pass(data_file, found, hit, seconds)
    return TrainData(dataset, found.stats, hit, seconds)


def load_features(folder: Path, in_memory: bool = False) -> Dataset:
    """The features of a pass, its shards in file order (memory-mapped unless ``in_memory``)."""
    shards = [Dataset.from_file(str(shard), in_memory=in_memory) for shard in sorted(folder.glob(SHARD_GLOB))]
    return shards[0] if len(shards) == 1 else concatenate_datasets(shards)


def _log_pass(data_file: Path, found: FilePass, hit: bool, seconds: float) -> None:
    for error in found.errors:
        logger.warning("%s: skipping line %d: %s", data_file.name, error.line, error.reason)
    if found.bad_rows > len(found.errors):
        logger.warning("%s: skipping %d more bad rows (only the first %d are listed)",
                       data_file.name, found.bad_rows - len(found.errors), len(found.errors))
    stats = found.stats
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


def example_lengths(dataset: Dataset) -> Iterator[pyarrow.Array]:
    """Each row's token count, read from the Arrow ``input_ids`` column a batch at a time: the column
    is never turned into Python lists, which for a large file take more memory than the file."""
    for batch in dataset.with_format("arrow").iter(batch_size=COUNT_BATCH_ROWS):
        yield pyarrow.compute.list_value_length(batch["input_ids"])


def token_count(dataset: Dataset) -> int:
    """The input tokens of ``dataset``."""
    return sum(pyarrow.compute.sum(lengths).as_py() or 0 for lengths in example_lengths(dataset))
