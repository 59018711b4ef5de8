"""Starting a training command under torchrun, when the config asks for more than one process.

The daemon starts ``python -m core.child.agent TORCHRUN-ARGS --module core.child.worker ARGS``:
``core.child.agent`` ties the group's life to the daemon and then becomes torchrun
(``python -m torch.distributed.run``), whose workers run the same child as a single process does.
torchrun turns any worker's non-zero exit into its own exit 1, so rank 0 records the outcome in
``result.json`` and the daemon reads it from there (:func:`group_exit_code`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from torch.distributed.run import get_args_parser

from core.base.errors import UserError
from core.child.agent import AGENT_MODULE, TORCHRUN_ENV
from core.runs.job import GROUP_RUN_ENV, open_train_run
from core.runs.run import Run, RunStatus, read_run
from trainer.config import TrainConfig
from trainer.distributed import distributed_problems, needs_torchrun, processes_per_node, visible_gpus

logger = logging.getLogger(__name__)

CLI_MODULE = "core.cli"  # `trainctl` as ``python -m``
MONITOR_SECONDS = 0.5  # how often the agent looks at its workers (torchrun's default is 0.1 s)


@dataclass(frozen=True)
class GroupLaunch:
    """torchrun's side of one training run: processes here, machines, rendezvous, shutdown grace."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    rdzv_id: str = "trainctl"
    shutdown_timeout: int = 60

    @classmethod
    def from_config(cls, config: TrainConfig) -> GroupLaunch | None:
        """The launch ``config.distributed`` asks for; None for a single process without FSDP (no torchrun)."""
        settings = config.distributed
        if not needs_torchrun(settings):
            return None
        if visible_gpus() == 0:
            logger.warning("distributed.nproc_per_node is %s without a GPU: DDP on gloo, for tests, not for speed",
                           settings.nproc_per_node)
        return cls(
            nproc_per_node=processes_per_node(settings),
            nnodes=settings.nnodes,
            node_rank=settings.node_rank,
            rdzv_endpoint=settings.rdzv_endpoint,
            rdzv_id=settings.rdzv_id,
            # Never shorter than the daemon's own grace, or torchrun would kill a checkpoint half-written.
            shutdown_timeout=math.ceil(config.daemon.stop_timeout_seconds),
        )

    @property
    def processes(self) -> int:
        """Processes in the whole group."""
        return self.nproc_per_node * self.nnodes

    def torchrun_args(self) -> list[str]:
        """torchrun's options: ``--standalone`` on one machine, a static rendezvous on several (node 0
        hosts it, so global rank 0, the one that writes, is on node 0)."""
        args = [
            f"--nproc-per-node={self.nproc_per_node}",
            "--max-restarts=0",  # the daemon retries a failed attempt itself, counting it
            f"--monitor-interval={MONITOR_SECONDS}",
        ]
        if torchrun_has_shutdown_timeout():
            args.append(f"--shutdown-timeout={self.shutdown_timeout}")
        if self.nnodes == 1:
            return [*args, "--standalone"]
        return [
            *args, f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}",
            f"--rdzv-endpoint={self.rdzv_endpoint}", f"--rdzv-id={self.rdzv_id}",
        ]

    def command(self, module: str, args: list[str]) -> list[str]:
        """The command line that runs ``python -m module args`` in every process of the group."""
        return [sys.executable, "-m", AGENT_MODULE, *self.torchrun_args(), "--module", module, *args]


@functools.cache
def torchrun_has_shutdown_timeout() -> bool:
    """Whether this torch's torchrun takes ``--shutdown-timeout`` (added after torch 2.11, which
    exits 2 on the unknown option). Without it torchrun kills the workers 30 s after a stop, so a
    checkpoint that takes longer is lost and the run resumes from the one before (said once)."""
    if "--shutdown-timeout" in get_args_parser()._option_string_actions:
        return True
    logger.warning("this torch's torchrun has no --shutdown-timeout: it kills the training processes 30 s "
                   "after a stop, so a longer checkpoint is lost (the run resumes from the previous one); "
                   "upgrade torch to keep daemon.stop_timeout_seconds under torchrun")
    return False


def launch_problems(config: TrainConfig, *, daemon: bool = False) -> list[str]:
    """What stops ``config.distributed`` from running here, each naming its field; [] when it can run.

    The daemon claims files on one machine, so it trains on that machine only (``daemon``).
    """
    problems = distributed_problems(config.distributed)
    if daemon and config.distributed.nnodes > 1:
        problems.append(
            f"distributed.nnodes is {config.distributed.nnodes} but the daemon trains on one machine; set it "
            "to 1, or train on several machines with `trainctl train` on each (docs/distributed.md)"
        )
    return problems


def group_exit_code(code: int, result: dict | None) -> int:
    """The training outcome's exit code (``core.child.protocol``) of a torchrun group.

    torchrun exits 1 whenever a worker exits non-zero, also for "interrupted" or "disk full", so the
    code rank 0 recorded in ``result.json`` wins; a group killed by a signal keeps its negative code.
    """
    recorded = (result or {}).get("exit_code")
    if code >= 0 and isinstance(recorded, int):
        return recorded
    return code


def group_for_command(config: TrainConfig) -> GroupLaunch | None:
    """The group a ``trainctl train`` must start, or None to train in this process (one process, or
    this process is already one of a torchrun group).

    Raises:
        UserError: this machine cannot run ``config.distributed``; the message names the fields.
    """
    if problems := launch_problems(config):
        raise UserError("; ".join(problems))
    return None if TORCHRUN_ENV in os.environ else GroupLaunch.from_config(config)


def train_in_group(
    group: GroupLaunch, config: TrainConfig, config_text: str, data_file: Path, base_dir: Path, output: Path | None,
) -> int:
    """``trainctl train`` on several processes: open the run folder, run the same command in every
    process under torchrun (rank 0 records the run and prints the result), wait; torchrun's exit code.

    On several machines each opens its own run folder; node 0's holds the checkpoints and the model,
    the others' only what their processes write beside them (their RNG states).
    """
    run = open_train_run(config, config_text, data_file, base_dir, processes=group.processes)
    args = ["train", str(data_file), "--base-dir", str(base_dir), *(["--output", str(output)] if output else [])]
    logger.info("training %s under torchrun with %d processes in run %s", data_file.name, group.processes, run.id)
    return _call_group(group, args, run)


def run_in_group(config: TrainConfig, argv: list[str], run: Run) -> int:
    """``trainctl ARGV`` (a phase of ``trainctl run``) in every process of the group ``config`` asks
    for, as members of the open ``run``; torchrun's exit code. Recorded in run.json: the launcher
    and the number of processes.

    Raises:
        UserError: this machine cannot run ``config.distributed``; the message names the fields.
    """
    group = group_for_command(config)
    if group is None:
        raise UserError("a torchrun group cannot start another one; run `trainctl run` outside torchrun")
    run.update(launcher="torchrun", processes=group.processes)
    logger.info("run %s: training under torchrun with %d processes", run.id, group.processes)
    return _call_group(group, argv, run)


def _call_group(group: GroupLaunch, argv: list[str], run: Run) -> int:
    """Run ``trainctl ARGV`` in the group with ``run``'s folder handed over; mark the run ended when
    rank 0 could not (it died, or it runs on another machine)."""
    code = subprocess.call(group.command(CLI_MODULE, argv), env={**os.environ, GROUP_RUN_ENV: str(run.path)})
    run.detach_log()
    ended = read_run(run.path)
    if ended is not None and ended.status is RunStatus.RUNNING:
        if code == 0:
            ended.finish(RunStatus.COMPLETED, node_rank=group.node_rank)
        else:
            ended.finish(RunStatus.FAILED, error=f"torchrun exited with code {code}; see {ended.log_file}")
    return code
