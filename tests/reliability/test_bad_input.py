"""Bad input: every bad row is reported with file, line and reason; good rows of the file still train.

One file mixes good rows with every kind of bad line (and a BOM, a 2 MB line, a 220 KB row, rows
over max_length); other files are bad as a whole (empty, blank, binary). Nothing crashes the daemon.
"""

from __future__ import annotations

import json

from core.daemon.loop import Outcome, TrainingDaemon
from tests.conftest import chat_rows
from tests.reliability.harness import events, update_config

GOOD = [json.dumps(row) for row in chat_rows(5, seed=21)]
LONG_REPLY = " ".join(["paris fox dog morning"] * 80)  # ~320 tokens, max_length is 128
HUGE_PROMPT = "the quick brown fox jumps over the lazy dog " * 5_000  # ~220 KB

# (line as bytes, reason the report must give; None for a good row)
MIXED: list[tuple[bytes, str | None]] = [
    (b"\xef\xbb\xbf" + GOOD[0].encode(), None),  # a UTF-8 BOM before the first row is fine
    (GOOD[1].encode(), None),
    (b'{"messages": [{"role": "user", "content": "hi"}', "invalid JSON"),
    (b'{"messages": "hello"}', '"messages" must be a non-empty list'),
    (b'{"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}',
     "messages[0].role is 'wizard'"),
    (b'{"messages": []}', '"messages" must be a non-empty list'),
    (b'{"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "a"}]}',
     "messages[0].content is empty"),
    (b"\xff\xfe\x00 not text", "not valid UTF-8"),
    (GOOD[2].encode(), None),
    (b'{"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "a"}]}',
     "messages[0].content must be a string, got int"),
    (b"[" * 2_000_000, "JSON nested too deeply"),
    (json.dumps({"messages": [{"role": "user", "content": HUGE_PROMPT},
                              {"role": "assistant", "content": "ok"}]}).encode(), None),
    (json.dumps({"messages": [{"role": "user", "content": "Say many words."},
                              {"role": "assistant", "content": LONG_REPLY}]}).encode(), None),
    (b'{"text": "plain text"}', "row is text format but the file is chat"),
    (GOOD[3].encode(), None),
    (b"   ", None),  # blank: ignored, not a row
    (b'{"messages": [{"role": "user", "content": "q"}]}', "no assistant message"),
    (b'["a", "list"]', "each line must be a JSON object, got list"),
    (GOOD[4].encode(), None),
]


def test_every_bad_row_is_reported_with_its_line_and_the_good_rows_still_train(layout):
    (layout.inbox / "mixed.jsonl").write_bytes(b"\n".join(line for line, _ in MIXED) + b"\n")

    assert TrainingDaemon(layout.root).run_once() is Outcome.TRAINED

    report = json.loads((layout.done / "mixed.jsonl.report.json").read_text())
    assert report["file"] == "mixed.jsonl" and report["outcome"] == "trained"
    validation = report["validation"]
    expected = {number: reason for number, (_, reason) in enumerate(MIXED, start=1) if reason}
    got = {row["line"]: row["reason"] for row in validation["bad_lines"]}
    assert got.keys() == expected.keys()
    for line, reason in expected.items():
        assert reason in got[line], (line, got[line])
    # Rows over max_length: the huge prompt leaves nothing to learn from, the long reply is cut.
    long_rows = {row["line"]: row["reason"] for row in validation["long_rows"]}
    assert "nothing left to learn from" in long_rows[12] and "truncated to 128" in long_rows[13]
    assert (validation["good_rows"], validation["bad_rows"], validation["trained_rows"]) == (7, 11, 6)
    # The five good rows and the truncated one give 6 examples, one of them held out for the gate;
    # replay adds earlier files' rows, 10% of the 5 training rows (round(0.5) is 0: none).
    assert report["evaluation"]["replay"]["rows"] == round(0.1 * 5) == 0
    assert report["training"]["examples"] == 6 - 1
    [started] = [e for e in events(layout, "training_started") if e["file"] == "mixed.jsonl"]
    assert started["attempt"] == 1


def test_files_bad_as_a_whole_are_failed_with_their_reason_and_the_daemon_goes_on(layout):
    files = {
        "empty.jsonl": b"",
        "blank.jsonl": b"\n \n\t\n",
        "bom-only.jsonl": b"\xef\xbb\xbf",
        "binary.jsonl": bytes(range(256)) * 64,
        "all-bad.jsonl": b'{"messages": []}\n{"prompt": "no completion"}\n',
    }
    for name, data in files.items():
        (layout.inbox / name).write_bytes(data)
    daemon = TrainingDaemon(layout.root)

    results = [daemon.run_once() for _ in range(len(files) + 1)]

    assert results == [Outcome.INVALID] * len(files) + [Outcome.IDLE]
    for name in files:
        report = json.loads((layout.failed / f"{name}.report.json").read_text())
        assert report["outcome"] == "invalid" and report["validation"]["usable"] is False
        assert any("no good rows" in problem for problem in report["validation"]["problems"]), name
    assert {e["file"] for e in events(layout, "validation_failed")} == set(files)


def test_with_on_bad_row_reject_a_file_with_one_bad_row_is_refused_listing_it(layout):
    update_config(layout, data={"on_bad_row": "reject"})
    (layout.inbox / "one-bad.jsonl").write_text("\n".join([GOOD[0], "{oops", GOOD[1]]) + "\n")

    assert TrainingDaemon(layout.root).run_once() is Outcome.INVALID

    validation = json.loads((layout.failed / "one-bad.jsonl.report.json").read_text())["validation"]
    assert validation["bad_lines"] == [{"line": 2, "reason": validation["bad_lines"][0]["reason"]}]
    assert "invalid JSON" in validation["bad_lines"][0]["reason"]
    assert "data.on_bad_row is 'reject'" in validation["problems"][0]
