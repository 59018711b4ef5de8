"""One pass over a data file: every row read, checked and tokenized, the features written to Arrow
shards, in worker processes when the file is large.

Chat templates render in Python, so one process tokenizes a chat file at about a thousand rows a
second whatever the machine has besides. A file of at least ``2 x`` :data:`MIN_LINES_PER_WORKER`
lines is therefore cut, at line ends, into parts of about equal bytes, one per worker
(``data.tokenize_workers``), and each part is tokenized in its own process into its own shard.
The parts give exactly what one pass gives:

* a quick pass in this process first parses the rows (no template, no tokenizer) and notes, where
  each part starts, the line number, how many good rows came before (the index a profile's
  ``transform_example`` gets) and the file's format so far, so each worker reads its rows as the
  single pass would;
* the shards, in order, are the file's features, and the parts' statistics add up
  (:meth:`FilePass.add`); the first failing row of the earliest part is the error raised.

Workers are started with ``spawn`` (the daemon has threads), take a second or more each to import
the tokenizer's libraries, and each holds its own copy of the tokenizer. If they cannot be started
or one dies (killed for memory), the file is tokenized again in this process: a fault of the
machine never fails a file.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import pickle
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from datasets import Features, List, Value
from datasets.arrow_writer import ArrowWriter

from profiles import Profile
from trainer.config import TrainConfig
from trainer.data.formats import RowError, RowStream
from trainer.data.tokenization import ChatTemplateError, ExampleEncoder, TokenizeStats

logger = logging.getLogger(__name__)

FEATURES = Features({"input_ids": List(Value("int32")), "labels": List(Value("int64"))})
"""The column types ``Dataset.from_list`` gives the same features, so cached and fresh data concatenate."""
MAX_LISTED_ROWS = 1000
"""Bad rows kept with their line and reason (the first ones); beyond that only their count."""
SHARD_GLOB = "features-*.arrow"
"""The Arrow shards of a pass in a folder; their names sort in file order."""
MIN_LINES_PER_WORKER = 10_000
"""Fewer lines than this per worker are tokenized faster in one process than a worker starts."""
MAX_AUTO_WORKERS = 8
"""Workers ``data.tokenize_workers: auto`` starts at most (each holds a tokenizer and its libraries)."""


@dataclass
class FilePass:
    """What one pass over a file (or a part of it) found; its size does not grow with the rows."""

    format: str | None
    total_lines: int
    """Non-blank lines."""
    good_rows: int
    bad_rows: int
    errors: list[RowError]
    """The first :data:`MAX_LISTED_ROWS` bad rows."""
    stats: TokenizeStats

    def add(self, later: "FilePass") -> None:
        """Count in the pass over the part of the file that follows this one."""
        self.format = self.format or later.format
        self.total_lines += later.total_lines
        self.good_rows += later.good_rows
        self.bad_rows += later.bad_rows
        self.errors = (self.errors + later.errors)[:MAX_LISTED_ROWS]
        self.stats.add(later.stats)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data for the cache entry (:meth:`from_dict` reads it back)."""
        return {"format": self.format, "total_lines": self.total_lines, "good_rows": self.good_rows,
                "bad_rows": self.bad_rows, "errors": [error.to_dict() for error in self.errors],
                "stats": self.stats.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FilePass":
        """The pass :meth:`to_dict` wrote."""
        return cls(**{**data, "errors": [RowError(**error) for error in data["errors"]],
                      "stats": TokenizeStats.from_dict(data["stats"])})


@dataclass(frozen=True)
class Part:
    """Bytes ``start`` to ``stop`` of a file (cut at line ends), and what a single pass knew there."""

    start: int
    stop: int | None
    first_line: int
    first_index: int
    """Good rows before ``start``."""
    format: str | None


@dataclass(frozen=True)
class PartJob:
    """Everything a worker needs to tokenize one part (pickled to it)."""

    data_file: Path
    part: Part
    tokenizer: Any
    profile: Profile
    max_length: int
    on_overlength: str
    today: dt.date
    shard: Path | None


def shard_path(folder: Path | None, index: int) -> Path | None:
    """The Arrow shard of part ``index`` in ``folder`` (None: the features are not kept)."""
    return None if folder is None else Path(folder) / f"features-{index:05d}.arrow"


def tokenize_file(
    data_file: Path, tokenizer: Any, profile: Profile, config: TrainConfig, features_dir: Path | None,
    today: dt.date | None = None,
) -> FilePass:
    """Read and tokenize ``data_file`` one row at a time, writing its features as Arrow shards
    (:data:`SHARD_GLOB`, in file order) into ``features_dir``; None counts without keeping them.

    Raises:
        DataFileError: the file is missing or not a regular file.
        ChatTemplateError: the chat template fails on a row (the message names the file and line).
    """
    today = today or dt.date.today()
    if features_dir is not None:
        Path(features_dir).mkdir(parents=True, exist_ok=True)
    workers = worker_count(config.data.tokenize_workers, data_file)

    def jobs(parts: list[Part]) -> list[PartJob]:
        return [PartJob(Path(data_file), part, tokenizer, profile, config.hyperparams.max_length,
                        config.data.on_overlength, today, shard_path(features_dir, k)) for k, part in enumerate(parts)]

    whole = jobs([Part(0, None, 1, 0, None)])[0]
    try:
        if workers < 2 or not _picklable(whole):
            return pass_part(whole)
        logger.info("%s: tokenizing in %d processes", Path(data_file).name, workers)
        try:
            return _in_workers(jobs(plan_parts(Path(data_file), profile, workers)))
        except (BrokenProcessPool, OSError) as exc:
            logger.warning("%s: tokenizing in %d processes failed (%s: %s); tokenizing in this one",
                           Path(data_file).name, workers, type(exc).__name__, exc)
            for shard in Path(features_dir).glob(SHARD_GLOB) if features_dir is not None else ():
                shard.unlink()
            return pass_part(whole)
    except ChatTemplateError as exc:
        raise ChatTemplateError(f"{data_file}: {exc}") from exc


def _picklable(job: PartJob) -> bool:
    """Whether ``job`` can go to a worker (a tokenizer or profile built in code may not pickle)."""
    try:
        pickle.dumps(job)
    except Exception as exc:  # noqa: BLE001 - whatever pickling raises, one process still works
        logger.info("%s: tokenizing in this process: the tokenizer or profile cannot be sent to workers (%s)",
                    job.data_file.name, exc)
        return False
    return True


def worker_count(setting: int | Literal["auto"], data_file: Path) -> int:
    """Processes to tokenize ``data_file`` with: ``setting`` (``auto``: the usable cores, at most
    :data:`MAX_AUTO_WORKERS`), fewer so that each gets :data:`MIN_LINES_PER_WORKER` lines."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    wanted = min(cores, MAX_AUTO_WORKERS) if setting == "auto" else setting
    if wanted < 2 or not Path(data_file).is_file():
        return 1
    lines = 0
    with Path(data_file).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            lines += block.count(b"\n")
    return max(1, min(wanted, lines // MIN_LINES_PER_WORKER))


def plan_parts(data_file: Path, profile: Profile, count: int) -> list[Part]:
    """``count`` parts of about equal bytes, each with what a single pass knew at its start."""
    size = data_file.stat().st_size
    cuts = [size * k // count for k in range(1, count)]
    stream = RowStream(data_file, profile)
    parts, begun, good = [], Part(0, None, 1, 0, None), 0
    for item in stream:
        good += not isinstance(item, RowError)
        if cuts and stream.offset >= cuts[0]:
            parts.append(Part(begun.start, stream.offset, begun.first_line, begun.first_index, begun.format))
            begun = Part(stream.offset, None, stream.next_line, good, stream.format)
            cuts = [cut for cut in cuts if cut > stream.offset]
    return [*parts, begun]


def _in_workers(jobs: list[PartJob]) -> FilePass:
    """The parts tokenized in one process each, their passes added up in file order.

    Workers ignore SIGINT and SIGTERM, so a stop asked of the daemon lets the pass finish as it
    would in one process (the daemon looks at its stop flag after validation); they are killed,
    and waited for, when the pass fails or the caller is interrupted, so that no shard is written
    after this returns.
    """
    pool = ProcessPoolExecutor(max_workers=len(jobs), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_stop_signals)
    try:
        passes = pool.map(pass_part, jobs)
        found = next(passes)
        for later in passes:
            found.add(later)
    except BaseException:
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:  # SIGKILL: they ignore SIGTERM; and none may write a shard after this
            worker.kill()
        for worker in workers:
            worker.join()
        raise
    pool.shutdown()
    return found


def _ignore_stop_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def pass_part(job: PartJob) -> FilePass:
    """Read, check and tokenize one part of a file, writing its features to ``job.shard``."""
    part = job.part
    stream = RowStream(job.data_file, job.profile, start=part.start, stop=part.stop, first_line=part.first_line,
                       format=part.format)
    encoder = ExampleEncoder(job.tokenizer, job.profile, job.max_length, job.on_overlength, job.today,
                             first_index=part.first_index)
    found = FilePass(None, 0, 0, 0, [], encoder.stats)
    writer = ArrowWriter(features=FEATURES, path=str(job.shard)) if job.shard is not None else None
    try:
        for item in stream:
            if isinstance(item, RowError):
                found.bad_rows += 1
                found.errors += [item] if len(found.errors) < MAX_LISTED_ROWS else []
                continue
            found.good_rows += 1
            for feature in encoder.encode(item):
                if writer is not None:
                    writer.write(feature)
        if writer is not None:
            writer.finalize()
    finally:
        if writer is not None:
            writer.close()
    found.format, found.total_lines = stream.format, stream.total_lines
    return found
