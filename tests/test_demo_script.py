"""``scripts/demo.sh`` end to end, with its setup step stubbed and a tiny model as the embedded one.

The script itself runs unchanged in a copy of the repo's shape: it makes ``demo/``, which finds the
embedded model in the models home (``TRAINCTL_HOME``) without a copy of its own, drains the samples
through ``trainctl daemon --once`` and prints where the result is and the count of each outcome. A
sample that fails makes it exit non-zero.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_jsonl
from tests.tiny_models import build_tiny_model_dir
from trainer.config import TrainConfig, config_to_dict
from trainer.model.model_dirs import is_valid_model_dir

REPO = Path(__file__).resolve().parents[1]
SAMPLES = ["chat.jsonl", "text.jsonl"]


def _repo_copy(root: Path) -> Path:
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "demo.sh", root / "scripts" / "demo.sh")
    (root / "scripts" / "setup.sh").write_text("#!/usr/bin/env bash\ntrue\n")  # the venv exists already
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "trainctl").write_text(f'#!/usr/bin/env bash\nexec {Path(sys.executable).parent}/trainctl "$@"\n')
    (venv_bin / "trainctl").chmod(0o755)
    (root / "samples").mkdir()
    for name in SAMPLES:
        shutil.copy(REPO / "samples" / name, root / "samples" / name)
    # The default config trains up to 1,024 tokens: the tiny model needs that many positions.
    build_tiny_model_dir(root / "home" / "models" / "SmolLM2-135M-Instruct", max_positions=1024)
    # demo.sh's `trainctl init demo` keeps an existing config.json: the defaults but for the gate's
    # answer-dependence rule, which the tiny random model (no question-answer pairing) would fail.
    config = {**config_to_dict(TrainConfig()), "$schema": "config.schema.json"}
    config["gate"]["min_answer_dependence"] = 0.0
    (root / "demo").mkdir()
    (root / "demo" / "config.json").write_text(json.dumps(config))
    return root


def _demo(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAINCTL_HOME": str(root / "home")}
    return subprocess.run(["bash", "scripts/demo.sh"], cwd=root, capture_output=True, text=True, timeout=600, env=env)


def test_demo_trains_every_sample_into_a_snapshot_and_fails_loudly_on_a_bad_one(tmp_path):
    root = _repo_copy(tmp_path / "repo")

    first = _demo(root)

    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    demo = root / "demo"
    assert sorted(p.name for p in (demo / "queue" / "done").glob("*.jsonl")) == sorted(SAMPLES)
    assert len(list((demo / "snapshots").iterdir())) == len(SAMPLES)
    assert is_valid_model_dir(demo / "current_model")
    assert f"current model: {(demo / 'current_model').resolve()}" in first.stdout
    status = json.loads((demo / "status" / "training_status.json").read_text())
    assert status["state"] == "idle" and status["last_completed_file"] in SAMPLES
    assert not (demo / "models").exists(), "the demo base dir must not hold a second model copy"
    assert "trained 2, duplicate 0, invalid 0, failed 0" in first.stdout

    # Again, with a sample that has no usable row: the old samples are duplicates, the new one fails.
    write_jsonl(root / "samples" / "broken.jsonl", [{"nonsense": 1}, {"messages": []}])
    second = _demo(root)

    assert second.returncode == 1
    assert "trained 0, duplicate 2, invalid 1, failed 0" in second.stdout
    assert "demo: 1 sample file(s) failed" in second.stderr
    assert (demo / "queue" / "failed" / "broken.jsonl").exists()
    assert len(list((demo / "snapshots").iterdir())) == len(SAMPLES)
