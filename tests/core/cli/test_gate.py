"""The promotion gate end to end, through the real CLI on a temp base dir with the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main
from core.memory.buffers import HELDOUT_ROWS_FILENAME
from core.memory.row_losses import ROW_LOSSES_FILENAME
from core.snapshots.store import SnapshotStore, file_digests, read_manifest
from core.state.layout import init_base_dir
from tests.conftest import chat_rows, garbage_rows, write_jsonl


def _events(root: Path, kind: str) -> list[dict]:
    lines = (root / "status" / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == kind]


def test_good_file_promoted_garbage_rejected_then_forced_and_a_bad_golden_set_left_out(tiny_config, tmp_path, capsys):
    root = tmp_path / "base"
    layout = init_base_dir(root)
    config = {**tiny_config, "gate": {"max_regression": 0.005, "min_answer_dependence": 0.0}}
    layout.config_file.write_text(json.dumps(config), encoding="utf-8")
    write_jsonl(layout.eval_dir / "golden.jsonl", chat_rows(12, seed=3))
    write_jsonl(layout.eval_dir / "broken.jsonl", ["{not json"])
    (layout.eval_dir / "empty.jsonl").write_text("", encoding="utf-8")
    good = chat_rows(40, seed=1)
    write_jsonl(layout.inbox / "good.jsonl", good)

    assert main(["daemon", "--once", "--base-dir", str(root)]) == 0
    store = SnapshotStore(layout)
    first = store.current()
    manifest = read_manifest(first.path)
    table = {row["set"]: row for row in manifest["evaluation"]["sets"]}
    assert manifest["evaluation"]["verdict"] == "promoted"
    assert set(table) == {"heldout", "eval/golden.jsonl"}  # the broken and the empty set are left out
    assert table["heldout"]["rows"] == 4 and table["heldout"]["loss_after"] < table["heldout"]["loss_before"]
    assert all(len(row["sha256"]) == 64 and row["tokens"] > 0 for row in table.values())
    invalid = _events(root, "eval_set_invalid")
    assert sorted(e["path"] for e in invalid) == ["eval/broken.jsonl", "eval/empty.jsonl"]
    assert "line 1" in next(e["reason"] for e in invalid if e["path"] == "eval/broken.jsonl")
    assert (layout.memory / "heldout.json").exists()  # the promoted file's held-out rows are remembered

    before_files = file_digests(first.path)
    write_jsonl(layout.inbox / "garbage.jsonl", garbage_rows(good))
    assert main(["daemon", "--once", "--base-dir", str(root)]) == 1  # a file filed untrained
    assert store.current().id == first.id and file_digests(store.current().path) == before_files
    report = json.loads((layout.rejected / "garbage.jsonl.report.json").read_text())
    assert report["outcome"] == "rejected" and "gate.max_regression" in report["rule"]
    assert {row["set"] for row in report["evaluation"]["sets"]} == {"heldout", "eval/golden.jsonl", "memory"}
    assert all(row["loss_before"] is not None and row["loss_after"] is not None for row in report["evaluation"]["sets"])
    assert report["evaluation"]["replay"] == {"rows": 4, "files": {"good.jsonl": 4}}  # 0.1 of its 36 training rows
    # the promoted candidate's numbers are the current model's: only the new held-out rows are measured before
    assert report["evaluation"]["before_rows_measured"] == 4
    garbage_table = {row["set"]: row for row in report["evaluation"]["sets"]}
    assert abs(garbage_table["memory"]["loss_before"] - table["heldout"]["loss_after"]) < 1e-9
    assert garbage_table["eval/golden.jsonl"]["loss_before"] == table["eval/golden.jsonl"]["loss_after"]
    rejected = [s for s in store.list() if s.verdict == "rejected"]
    assert [s.source_file for s in rejected] == ["garbage.jsonl"]
    assert _events(root, "promotion_rejected")[0]["snapshot"] == rejected[0].id
    status = json.loads((layout.status_dir / "training_status.json").read_text())
    assert f"snapshots promote {rejected[0].id} --force" in status["last_error"]

    write_jsonl(layout.inbox / "garbage-again.jsonl", garbage_rows(good))
    main(["daemon", "--once", "--base-dir", str(root)])
    again = json.loads((layout.rejected / "garbage-again.jsonl.report.json").read_text())
    assert again["outcome"] == "duplicate" and "rejected" in again["message"]

    capsys.readouterr()
    assert main(["snapshots", "list", "--base-dir", str(root)]) == 0
    listing = capsys.readouterr().out
    assert "rejected" in listing and "promoted" in listing and "heldout" in listing

    assert main(["snapshots", "promote", rejected[0].id[:4], "--base-dir", str(root)]) == 1  # the gate says no
    assert store.current().id == first.id
    assert main(["snapshots", "promote", rejected[0].id[:4], "--force", "--base-dir", str(root)]) == 0
    assert store.current().id == rejected[0].id
    assert _events(root, "snapshot_promoted")[-1]["forced"] is True

    capsys.readouterr()
    assert main(["eval", "current", "--json", "--base-dir", str(root)]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["snapshot"] == rejected[0].id
    assert {row["set"] for row in measured["sets"]} == {"heldout", "eval/golden.jsonl", "memory"}
    assert {p["path"] for p in measured["left_out"]} == {"eval/broken.jsonl", "eval/empty.jsonl"}
    assert main(["eval", first.id, "--data", str(layout.eval_dir / "golden.jsonl"), "--base-dir", str(root)]) == 0
    assert "golden.jsonl" in capsys.readouterr().out


@pytest.mark.parametrize("round_rows", [2, 0], ids=["in rounds", "whole sets"])
def test_a_lora_run_measures_the_current_model_after_training_on_its_kept_adapter(tiny_config, tmp_path, capsys,
                                                                                   round_rows):
    """A golden set added after the current model was made, and a new file's held-out rows, have no
    "before" numbers: a LoRA run measures nothing before training (its first step waits for no
    measuring) but measures them after training, on the adapter it kept aside, round by round or
    whole. They must be the current model's own losses (not the candidate's), as ``trainctl eval``
    measures them."""
    root = tmp_path / "base"
    layout = init_base_dir(root)
    gate = {"max_regression": 10.0, "min_answer_dependence": 0.0, "round_rows": round_rows, "decisive_z": 100.0}
    layout.config_file.write_text(json.dumps({**tiny_config, "gate": gate}), encoding="utf-8")
    write_jsonl(layout.inbox / "first.jsonl", chat_rows(40, seed=1))
    assert main(["daemon", "--once", "--base-dir", str(root)]) == 0
    first = SnapshotStore(layout).current()

    write_jsonl(layout.eval_dir / "golden.jsonl", chat_rows(10, seed=3))
    write_jsonl(layout.inbox / "second.jsonl", chat_rows(40, seed=2))
    assert main(["daemon", "--once", "--base-dir", str(root)]) == 0
    second = SnapshotStore(layout).current()
    evaluation = read_manifest(second.path)["evaluation"]
    table = {row["set"]: row for row in evaluation["sets"]}
    assert {name: (row["rows_measured"], row["rows"], row["z"]) for name, row in table.items()} == {
        "heldout": (4, 4, None), "eval/golden.jsonl": (10, 10, None), "memory": (4, 4, None)}  # no round decided
    assert evaluation["before_rows_measured"] == 4 + 10  # the new held-out rows, the golden rows
    logs = "".join(path.read_text() for path in layout.runs.glob("*/train.log"))
    assert "second.jsonl: the current model measured on 0 of 18 evaluation rows before training" in logs
    stored = json.loads((second.path / ROW_LOSSES_FILENAME).read_text())["rows"]
    assert len(stored) == 4 + 10 + 4  # the candidate's numbers of every row measured: the next file's "before"

    heldout = [json.loads(line)["example"] for line in (second.path / HELDOUT_ROWS_FILENAME).read_text().splitlines()]
    write_jsonl(tmp_path / "heldout.jsonl", heldout)
    for name, data in (("eval/golden.jsonl", layout.eval_dir / "golden.jsonl"), ("heldout", tmp_path / "heldout.jsonl")):
        capsys.readouterr()
        assert main(["eval", first.id, "--data", str(data), "--json", "--base-dir", str(root)]) == 0
        [current] = json.loads(capsys.readouterr().out)["sets"]
        assert abs(table[name]["loss_before"] - current["loss_after"]) < 1e-5 * current["loss_after"], name
        assert abs(table[name]["loss_after"] - table[name]["loss_before"]) > 1e-3, name  # the candidate differs

    capsys.readouterr()
    assert main(["snapshots", "list", "--base-dir", str(root)]) == 0
