"""How many threads generation takes: the cores other processes leave free, never fewer than one."""

from __future__ import annotations

import pytest

from trainer.inference.loading import generation_threads


@pytest.mark.parametrize(("cores", "load", "threads"), [
    (2, 0.0, 2), (2, 0.4, 2), (2, 1.0, 1), (2, 8.7, 1), (16, 3.2, 13), (16, 0.0, 16), (1, 0.0, 1),
])
def test_generation_takes_the_free_cores(cores, load, threads):
    assert generation_threads(cores=cores, load=load) == threads


def test_by_default_it_reads_this_machine(monkeypatch):
    monkeypatch.setattr("os.getloadavg", lambda: (5.0, 0.0, 0.0))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    assert generation_threads() == 3
