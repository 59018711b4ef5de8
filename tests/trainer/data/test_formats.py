"""Reading JSONL files: the five formats, per-message weights, and per-line errors for bad rows."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_jsonl
from trainer.data.formats import DataFileError, ParsedFile, read_examples

GOOD_CHAT = {
    "messages": [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there"},
    ]
}
GOOD_ROWS = {
    "chat": GOOD_CHAT,
    "sharegpt": {"conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi"}]},
    "alpaca": {"instruction": "Say hi.", "input": "", "output": "Hi"},
    "prompt_completion": {"prompt": "Hello", "completion": "Hi"},
}


def parse_rows(tmp_path, rows: list) -> ParsedFile:
    return read_examples(write_jsonl(tmp_path / "train.jsonl", rows))


def errors_by_line(parsed: ParsedFile) -> dict[int, str]:
    return {error.line: error.reason for error in parsed.errors}


# --- the five formats ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "fmt", "expected"),
    [
        pytest.param(
            {"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris."},
            ]},
            "chat",
            {"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris."},
            ]},
            id="chat",
        ),
        pytest.param(
            {"conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": "Capital of France?"},
                {"from": "gpt", "value": "Paris."},
                {"from": "user", "value": "And Germany?"},
                {"from": "assistant", "value": "Berlin."},
            ]},
            "sharegpt",
            {"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And Germany?"},
                {"role": "assistant", "content": "Berlin."},
            ]},
            id="sharegpt",
        ),
        pytest.param(
            {"instruction": "Translate to German.", "input": "good morning", "output": "Guten Morgen"},
            "alpaca",
            {"messages": [
                {"role": "user", "content": "Translate to German.\n\ngood morning"},
                {"role": "assistant", "content": "Guten Morgen"},
            ]},
            id="alpaca",
        ),
        pytest.param(
            {"instruction": "Say hello.", "input": "", "output": "Hello!"},
            "alpaca",
            {"messages": [
                {"role": "user", "content": "Say hello."},
                {"role": "assistant", "content": "Hello!"},
            ]},
            id="alpaca-empty-input",
        ),
        pytest.param(
            {"prompt": "2 + 2 =", "completion": " 4"},
            "prompt_completion",
            {"messages": [
                {"role": "user", "content": "2 + 2 ="},
                {"role": "assistant", "content": " 4"},
            ]},
            id="prompt_completion",
        ),
        pytest.param(
            {"text": "The quick brown fox jumps over the lazy dog."},
            "text",
            {"text": "The quick brown fox jumps over the lazy dog."},
            id="text",
        ),
    ],
)
def test_each_format_is_normalized(tmp_path, row, fmt, expected):
    parsed = parse_rows(tmp_path, [row, row])

    assert parsed.format == fmt
    assert parsed.errors == []
    assert parsed.examples == [{**expected, "_line": 1}, {**expected, "_line": 2}]
    assert parsed.total_lines == 2


def test_message_weights_0_and_1_are_kept(tmp_path):
    row = {"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bad reply", "weight": 0},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Good reply", "weight": 1},
    ]}

    [example] = parse_rows(tmp_path, [row]).examples

    assert [m.get("weight") for m in example["messages"]] == [None, 0, None, 1]


@pytest.mark.parametrize("weight", [2, -1, 0.5, "1", True, None])
def test_invalid_weight_is_a_row_error(tmp_path, weight):
    bad = {"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello", "weight": weight},
    ]}

    parsed = parse_rows(tmp_path, [GOOD_CHAT, bad])

    assert [e["_line"] for e in parsed.examples] == [1]
    assert errors_by_line(parsed) == {2: f"messages[1].weight must be 0 or 1, got {weight!r}"}


# --- bad rows -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "bad_row", "reason_parts"),
    [
        pytest.param("chat", '{"messages": [}', ["invalid JSON at column 15"], id="invalid-json"),
        pytest.param("chat", "[1, 2, 3]", ["must be a JSON object", "list"], id="array"),
        pytest.param("chat", '"just a string"', ["must be a JSON object", "str"], id="string"),
        pytest.param("chat", {"question": "?", "answer": "!"}, ["unknown row format", "answer", "question"],
                     id="no-known-format"),
        pytest.param(
            "chat", {"messages": [{"role": "bot", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
            ["messages[0].role is 'bot'", "system, user, assistant"], id="unknown-role",
        ),
        pytest.param(
            "chat", {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "Yo"}]},
            ["messages[0].content is empty"], id="empty-content",
        ),
        pytest.param(
            "chat", {"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "Yo"}]},
            ["messages[0].content must be a string, got int"], id="content-not-string",
        ),
        pytest.param("chat", {"messages": "Hello"}, ['"messages" must be a non-empty list'],
                     id="messages-not-list"),
        pytest.param("chat", {"messages": []}, ['"messages" must be a non-empty list'], id="messages-empty"),
        pytest.param("chat", {"messages": ["Hello"]}, ["messages[0] must be an object"],
                     id="message-not-object"),
        pytest.param(
            "chat",
            {"messages": [{"role": "system", "content": "Be nice"}, {"role": "user", "content": "Hi"}]},
            ["no assistant message"], id="no-assistant-turn",
        ),
        pytest.param(
            "sharegpt",
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "narrator", "value": "."}]},
            ["conversations[1].from is 'narrator'"], id="sharegpt-unknown-speaker",
        ),
        pytest.param(
            "sharegpt",
            {"conversations": [{"from": ["human"], "value": "Hi"}, {"from": "gpt", "value": "Yo"}]},
            ["conversations[0].from is ['human']"], id="sharegpt-speaker-not-string",
        ),
        pytest.param(
            "sharegpt", {"conversations": [{"from": "human", "value": "Hi"}]},
            ["no assistant message"], id="sharegpt-no-reply",
        ),
        pytest.param("alpaca", {"instruction": "Do it", "input": 3, "output": "Done"},
                     ['"input" must be a string'], id="alpaca-input-not-string"),
        pytest.param("alpaca", {"instruction": "", "output": "Done"}, ['"instruction" is empty'],
                     id="alpaca-empty-instruction"),
        pytest.param("prompt_completion", {"prompt": "Hi", "completion": None},
                     ['"completion" must be a string, got NoneType'], id="completion-null"),
    ],
)
def test_bad_row_becomes_a_row_error_and_good_rows_are_kept(tmp_path, fmt, bad_row, reason_parts):
    parsed = parse_rows(tmp_path, [GOOD_ROWS[fmt], bad_row, GOOD_ROWS[fmt]])

    assert parsed.format == fmt
    assert [e["_line"] for e in parsed.examples] == [1, 3]
    [error] = parsed.errors
    assert error.line == 2
    for part in reason_parts:
        assert part in error.reason
    assert error.to_dict() == {"line": 2, "reason": error.reason}
    assert str(error).startswith("line 2: ")


def test_non_utf8_bytes_are_a_row_error(tmp_path):
    path = tmp_path / "train.jsonl"
    good = json.dumps(GOOD_CHAT).encode()
    path.write_bytes(good + b"\n" + b'{"text": "caf\xe9"}\n' + good + b"\n")

    parsed = read_examples(path)

    assert [e["_line"] for e in parsed.examples] == [1, 3]
    assert errors_by_line(parsed) == {2: "not valid UTF-8 (byte 13); save the file as UTF-8"}


def test_row_in_another_format_than_the_first_good_row_is_an_error(tmp_path):
    parsed = parse_rows(tmp_path, [
        "not json",
        {"prompt": "Hi", "completion": "Hello"},
        GOOD_CHAT,
        {"prompt": "Bye", "completion": "Goodbye"},
    ])

    assert parsed.format == "prompt_completion"
    assert [e["_line"] for e in parsed.examples] == [2, 4]
    errors = errors_by_line(parsed)
    assert sorted(errors) == [1, 3]
    assert errors[3] == "row is chat format but the file is prompt_completion (set by its first good row)"


def test_utf8_bom_on_the_first_line_is_accepted(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "Guten Morgen"}).encode() + b"\n")

    parsed = read_examples(path)

    assert parsed.errors == []
    assert parsed.examples == [{"text": "Guten Morgen", "_line": 1}]


def test_blank_lines_are_skipped_but_line_numbers_stay_right(tmp_path):
    path = tmp_path / "train.jsonl"
    good = json.dumps(GOOD_CHAT)
    path.write_text(f"\n{good}\r\n   \n\n{{broken\n\t\n{good}\n\n", encoding="utf-8")

    parsed = read_examples(path)

    assert [e["_line"] for e in parsed.examples] == [2, 7]
    assert list(errors_by_line(parsed)) == [5]
    assert parsed.total_lines == 3


def test_file_of_only_bad_rows_has_no_format_and_every_line_reported(tmp_path):
    parsed = parse_rows(tmp_path, ["{", "[]", {"messages": []}])

    assert parsed.format is None
    assert parsed.examples == []
    assert [e.line for e in parsed.errors] == [1, 2, 3]


def test_missing_file_raises_data_file_error(tmp_path):
    with pytest.raises(DataFileError, match="missing.jsonl"):
        read_examples(tmp_path / "missing.jsonl")


def test_directory_raises_data_file_error(tmp_path):
    with pytest.raises(DataFileError, match="not a regular file"):
        read_examples(tmp_path)


def test_deeply_nested_json_is_a_row_error_not_a_crash(tmp_path):
    path = tmp_path / "nested.jsonl"
    good = json.dumps({"text": "fine"})
    path.write_text(good + "\n" + "[" * 100_000 + "\n" + good + "\n", encoding="utf-8")
    parsed = read_examples(path)
    assert [e["_line"] for e in parsed.examples] == [1, 3]
    assert [(err.line, err.reason) for err in parsed.errors] == [(2, "JSON nested too deeply to parse")]
