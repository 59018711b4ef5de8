"""Reading a JSONL training file into normalized examples.

One file uses one of five formats, fixed by its first good row:

============================  ===========================================================
format                        a row looks like
============================  ===========================================================
``chat`` (OpenAI)             ``{"messages": [{"role": "user", "content": "..."}, ...]}``
``sharegpt``                  ``{"conversations": [{"from": "human", "value": "..."}, ...]}``
``alpaca``                    ``{"instruction": "...", "input": "...", "output": "..."}``
``prompt_completion``         ``{"prompt": "...", "completion": "..."}``
``text`` (pretraining)        ``{"text": "..."}``
============================  ===========================================================

Every row becomes either ``{"messages": [...], "_line": n}`` or ``{"text": ..., "_line": n}``
(see ``profiles/base.py``). A bad row never stops the file: it becomes a ``RowError`` with its
1-based line number and the reason, and the caller's policy decides what happens to the file.
Tokenization and loss masking live in ``trainer/data/tokenization.py``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from core.base.errors import UserError
from profiles import Example, Profile

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant"}


class DataFileError(UserError, ValueError):
    """The file as a whole cannot be read (missing, not a regular file, unreadable)."""


class RowError(ValueError):
    """One bad row: ``line`` is 1-based, ``reason`` says what is wrong and how to fix it."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason}

    def __reduce__(self):  # pickled by the tokenizing workers (trainer/data/file_pass.py)
        return RowError, (self.line, self.reason)


@dataclass
class ParsedFile:
    """The rows of one file: good ones normalized, bad ones explained."""

    path: Path
    format: str | None
    examples: list[Example] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    total_lines: int = 0
    """Non-blank lines seen."""


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} is empty")
    return value


def _check_conversation(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("conversation has no assistant message to learn from")
    return messages


def _chat(row: dict[str, Any]) -> Example:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list')
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ValueError(f"{where} must be an object with role and content")
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"{where}.role is {role!r}; use one of {', '.join(ROLES)}")
        normalized = {"role": role, "content": _text(message.get("content"), f"{where}.content")}
        if "weight" in message:
            if message["weight"] not in (0, 1) or isinstance(message["weight"], bool):
                raise ValueError(f"{where}.weight must be 0 or 1, got {message['weight']!r}")
            normalized["weight"] = message["weight"]
        out.append(normalized)
    return {"messages": _check_conversation(out)}


def _sharegpt(row: dict[str, Any]) -> Example:
    turns = row["conversations"]
    if not isinstance(turns, list) or not turns:
        raise ValueError('"conversations" must be a non-empty list')
    out = []
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise ValueError(f"{where} must be an object with from and value")
        speaker = turn.get("from")
        if not isinstance(speaker, str) or speaker not in SHAREGPT_ROLES:  # a list would not hash
            raise ValueError(f"{where}.from is {speaker!r}; use one of {', '.join(SHAREGPT_ROLES)}")
        out.append({"role": SHAREGPT_ROLES[speaker], "content": _text(turn.get("value"), f"{where}.value")})
    return {"messages": _check_conversation(out)}


def _alpaca(row: dict[str, Any]) -> Example:
    instruction = _text(row.get("instruction"), '"instruction"')
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise ValueError(f'"input" must be a string, got {type(extra).__name__}')
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return {"messages": [{"role": "user", "content": prompt},
                         {"role": "assistant", "content": _text(row.get("output"), '"output"')}]}


def _prompt_completion(row: dict[str, Any]) -> Example:
    return {"messages": [{"role": "user", "content": _text(row.get("prompt"), '"prompt"')},
                         {"role": "assistant", "content": _text(row.get("completion"), '"completion"')}]}


def _pretrain_text(row: dict[str, Any]) -> Example:
    return {"text": _text(row.get("text"), '"text"')}


# Detection order matters: the first format whose keys are present wins.
FORMATS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], Example]]] = {
    "chat": (("messages",), _chat),
    "sharegpt": (("conversations",), _sharegpt),
    "alpaca": (("instruction", "output"), _alpaca),
    "prompt_completion": (("prompt", "completion"), _prompt_completion),
    "text": (("text",), _pretrain_text),
}


def detect_format(row: dict[str, Any]) -> str:
    """The format name of one parsed row.

    Raises:
        ValueError: the row matches no known format.
    """
    for name, (keys, _) in FORMATS.items():
        if all(key in row for key in keys):
            return name
    raise ValueError(
        f"unknown row format with keys {sorted(row)[:6]}; expected one of: messages, conversations, "
        "instruction+output, prompt+completion, text"
    )


def _decode_line(raw: bytes, number: int) -> dict[str, Any]:
    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark some editors write
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None
    if not isinstance(row, dict):
        raise ValueError(f"each line must be a JSON object, got {type(row).__name__}")
    return row


def _iter_lines(path: Path, start: int, stop: int | None, first_line: int):
    """``(line number, line, byte offset after it)`` of each non-blank line from byte ``start`` (a
    line start) to byte ``stop`` (a line end, or the end of the file)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataFileError(f"{path}: cannot open ({exc.strerror})") from None
    with handle:
        handle.seek(start)
        offset = start
        for number, raw in enumerate(handle, start=first_line):
            if stop is not None and offset >= stop:
                return
            offset += len(raw)
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                yield number, raw, offset


class RowStream:
    """The rows of one file, read one line at a time: each good row as an example, each bad one as a ``RowError``.

    Memory does not grow with the file: nothing but the line being parsed is held. After (or
    during) iteration ``format`` is the file's format and ``total_lines`` the non-blank lines seen;
    ``offset`` is the byte after the last row read and ``next_line`` the number of the line after it.

    Args:
        path: the JSONL file.
        profile: if given, its ``validate_example`` problems are row errors too.
        start, stop, first_line, format: read only bytes ``start`` to ``stop`` (cut at line ends),
            numbering lines from ``first_line``, with ``format`` already set by a good row before
            ``start``: a part of the file read as the whole file's reading would see it.

    Raises:
        DataFileError: the file is missing or not a regular file.
    """

    def __init__(self, path: str | Path, profile: Profile | None = None, *, start: int = 0,
                 stop: int | None = None, first_line: int = 1, format: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataFileError(f"{self.path}: not a regular file")
        self.profile = profile
        self.start, self.stop, self.first_line = start, stop, first_line
        self.format = format
        self.total_lines = 0
        self.offset, self.next_line = start, first_line

    def __iter__(self) -> Iterator[Example | RowError]:
        for number, raw, end in _iter_lines(self.path, self.start, self.stop, self.first_line):
            self.offset, self.next_line = end, number + 1
            self.total_lines += 1
            try:
                example = self._parse(raw, number)
            except ValueError as exc:
                yield RowError(number, str(exc))
                continue
            example["_line"] = number
            yield example

    def _parse(self, raw: bytes, number: int) -> Example:
        row = _decode_line(raw, number)
        kind = detect_format(row)
        if self.format not in (None, kind):
            raise ValueError(f"row is {kind} format but the file is {self.format} (set by its first good row)")
        example = FORMATS[kind][1](row)
        problems = self.profile.validate_example(example) if self.profile else []
        if problems:
            raise ValueError("; ".join(problems))
        self.format = kind
        return example


def read_examples(path: str | Path, profile: Profile | None = None) -> ParsedFile:
    """Parse every line of a JSONL file into normalized examples and row errors, all held in memory.

    For a file of any size, iterate a :class:`RowStream` instead.

    Args:
        path: the JSONL file.
        profile: if given, its ``validate_example`` problems are row errors too.

    Raises:
        DataFileError: the file is missing or not a regular file.
    """
    stream = RowStream(path, profile)
    parsed = ParsedFile(path=stream.path, format=None)
    for item in stream:
        (parsed.errors if isinstance(item, RowError) else parsed.examples).append(item)
    parsed.format, parsed.total_lines = stream.format, stream.total_lines
    logger.info(
        "%s: %d good rows, %d bad rows (format %s)",
        stream.path.name, len(parsed.examples), len(parsed.errors), parsed.format,
    )
    return parsed
