"""Status readers never see half a file: thousands of parses while writers are killed mid-update.

The kill loop (test_kill_loop.py) runs the same reader during real training and kills; this test
hammers the file harder: a process does nothing but update the status, and is SIGKILLed at seeded
random moments, often in the middle of a write.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys

from core.state.status import StatusFile
from tests.reliability.harness import StatusReader, wait_until

WRITER = """
import sys
from core.state.status import StatusFile
status, step = StatusFile(sys.argv[1]), 0
print("ready", flush=True)
while True:
    step += 1
    status.update(current_step=step, loss=1.0 / step, queued_files=[f"f{i}.jsonl" for i in range(step % 40)])
"""
KILLS = 15


def test_a_reader_never_sees_invalid_json_while_writers_are_killed_mid_update(tmp_path):
    path = tmp_path / "status" / "training_status.json"
    rng = random.Random(7)

    with StatusReader(path, pause=0.0005) as reader:
        for _ in range(KILLS):
            writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
            assert writer.stdout.readline() == "ready\n"
            reads = reader.reads
            wait_until(lambda: reader.reads > reads + 50, 60, "the reader to parse a few updates")
            try:
                writer.wait(timeout=rng.uniform(0.01, 0.3))
            except subprocess.TimeoutExpired:
                writer.send_signal(signal.SIGKILL)
            assert writer.wait(timeout=30) == -signal.SIGKILL

    assert reader.bad == []
    assert reader.reads >= 1000
    assert StatusFile(path).read().current_step > 0
    # Killed writes leave their temp files behind; no reader ever opens them.
    assert all(p.name.startswith(".training_status.json.") for p in path.parent.glob("*.tmp"))
