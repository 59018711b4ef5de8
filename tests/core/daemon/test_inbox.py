"""The inbox scan, the stability rule and the atomic claim."""

from __future__ import annotations

import logging
import os
import socket
import threading

import pytest

from core.daemon.inbox import ClaimError, Inbox, InboxWatcher, StabilityTracker, check_regular_file, claim
from core.state.layout import BaseDir


@pytest.fixture()
def layout(tmp_path) -> BaseDir:
    return BaseDir.at(tmp_path).ensure()


def _touch(path, mtime: int, text: str = "{}\n"):
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))
    return path


def test_candidates_in_priority_then_mtime_then_name_order(layout):
    _touch(layout.inbox_low / "a.jsonl", 100)
    _touch(layout.inbox / "late.jsonl", 300)
    _touch(layout.inbox / "b.jsonl", 200)
    _touch(layout.inbox / "a.jsonl", 200)
    _touch(layout.inbox_high / "urgent.jsonl", 400)

    result = Inbox(layout).scan()

    order = [str(item.path.relative_to(layout.inbox)) for item in result.candidates]
    assert order == ["high/urgent.jsonl", "a.jsonl", "b.jsonl", "late.jsonl", "low/a.jsonl"]
    assert result.ignored == []


def test_non_candidates_are_reported_once_and_never_opened(layout, tmp_path):
    target = _touch(tmp_path / "elsewhere.jsonl", 1)
    (layout.inbox / "link.jsonl").symlink_to(target)
    (layout.inbox / "folder.jsonl").mkdir()
    os.mkfifo(layout.inbox / "pipe.jsonl")
    _touch(layout.inbox / ".hidden.jsonl", 1)
    _touch(layout.inbox / "upload.jsonl.part", 1)
    _touch(layout.inbox_high / "x.jsonl.tmp", 1)
    _touch(layout.inbox / "notes.txt", 1)
    _touch(layout.inbox / "bad\nname.jsonl", 1)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(layout.inbox_low / "sock.jsonl"))
    inbox = Inbox(layout)

    first = inbox.scan()
    second = inbox.scan()

    reasons = {item.path.name: item.reason for item in first.ignored}
    assert set(reasons) == {
        "link.jsonl", "folder.jsonl", "pipe.jsonl", ".hidden.jsonl", "upload.jsonl.part",
        "x.jsonl.tmp", "notes.txt", "bad\nname.jsonl", "sock.jsonl",
    }
    assert "symbolic link" in reasons["link.jsonl"]
    assert "folder" in reasons["folder.jsonl"]
    assert "regular file" in reasons["pipe.jsonl"]
    assert "line break" in reasons["bad\nname.jsonl"]
    assert first.candidates == [] and second.candidates == []
    assert second.ignored == []
    sock.close()


def test_an_entry_that_comes_back_is_reported_again(layout):
    inbox = Inbox(layout)
    hidden = _touch(layout.inbox / ".x.jsonl", 1)
    assert len(inbox.scan().ignored) == 1
    hidden.unlink()
    assert inbox.scan().ignored == []
    _touch(hidden, 2)
    assert [item.path.name for item in inbox.scan().ignored] == [".x.jsonl"]


def test_file_is_claimable_only_after_it_stopped_changing(layout):
    now = [1000.0]
    tracker = StabilityTracker(stable_seconds=5.0, clock=lambda: now[0])
    path = _touch(layout.inbox / "growing.jsonl", 100)
    inbox = Inbox(layout)

    assert not tracker.is_stable(inbox.scan().candidates[0])
    now[0] += 4.0
    _touch(path, 101, "{}\n{}\n")  # still being written: the clock starts again
    assert not tracker.is_stable(inbox.scan().candidates[0])
    now[0] += 4.9
    assert not tracker.is_stable(inbox.scan().candidates[0])
    assert tracker.seconds_left(inbox.scan().candidates[0]) == pytest.approx(0.1)
    now[0] += 0.1
    assert tracker.is_stable(inbox.scan().candidates[0])


def test_claim_keeps_the_name_and_disambiguates_collisions(layout):
    first = claim(_touch(layout.inbox / "data.jsonl", 1), layout.processing)
    second = claim(_touch(layout.inbox_high / "data.jsonl", 2), layout.processing)

    assert first == layout.processing / "data.jsonl"
    assert second == layout.processing / "data-1.jsonl"
    assert first.read_text() == "{}\n" and not (layout.inbox / "data.jsonl").exists()
    assert Inbox(layout).scan().candidates == []


def test_an_entry_swapped_for_a_symlink_or_fifo_is_never_opened(layout, tmp_path):
    target = _touch(tmp_path / "secret.jsonl", 1)
    link = layout.inbox / "swapped.jsonl"
    link.symlink_to(target)
    os.mkfifo(layout.inbox / "fifo.jsonl")

    claimed_link = claim(link, layout.processing)
    claimed_fifo = claim(layout.inbox / "fifo.jsonl", layout.processing)

    with pytest.raises(ClaimError, match="cannot be opened as a plain file"):
        check_regular_file(claimed_link)
    with pytest.raises(ClaimError, match="not a regular file"):
        check_regular_file(claimed_fifo)  # O_NONBLOCK: returns at once instead of waiting for a writer
    assert claimed_link.is_symlink() and target.read_text() == "{}\n"


def test_watcher_wakes_the_loop_on_a_new_file(layout):
    wake = threading.Event()
    watcher = InboxWatcher(layout.inbox, wake)
    watcher.start()
    try:
        _touch(layout.inbox_low / "new.jsonl", 1)
        assert wake.wait(timeout=5)
    finally:
        watcher.stop()


def test_stopping_the_watcher_hides_only_watchdogs_benign_stop_race_error(layout, caplog):
    watcher = InboxWatcher(layout.inbox, threading.Event())
    watcher.start()
    watcher.stop()
    inotify_log = logging.getLogger("watchdog.observers.inotify")

    with caplog.at_level(logging.ERROR):
        inotify_log.error("InotifyEmitter.queue_events() called when the thread is inactive")
        inotify_log.error("something else went wrong")

    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"]
