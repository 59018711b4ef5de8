"""``trainctl run``: train a phase (pretrain or sft) or a pipeline of them, each in its own run folder.

For each phase: check every data file (before any model loads), pick the run and checkpoint to
continue from, mix the data into the run folder, train with ``UltimateTrainer`` (progress log,
TensorBoard, trusted checkpoints, eval with the best checkpoint), save the model, record the result.

Resume: by default a phase continues the newest unfinished run of the same phase config from its
latest complete checkpoint, in that run's folder. ``--resume PATH`` starts a new run from the given
checkpoint; ``--no-resume`` (or ``checkpoint.resume: false``) always starts fresh.

A pipeline runs its phases in order; each phase after the first starts from the model the previous
phase saved (its best weights when evaluating) with a fresh optimizer. A phase of the same pipeline
that already completed is not trained again unless ``--no-resume`` is given.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from core.base.errors import UserError
from core.runs.follower import FollowerRun
from core.runs.job import GROUP_RUN_ENV, finish_job, start_job
from core.runs.phases import LoadedPhase, check_data_files, load_phase, load_pipeline, mix_data
from core.runs.run import Run, RunStatus, data_file_record, list_runs, read_run, reopen_run, start_run
from core.state.layout import BaseDir
from trainer.checkpoints.markers import checkpoint_problem, latest_checkpoint
from trainer.config import TrainConfig
from trainer.distributed import distributed_problems, is_main_process, needs_torchrun
from trainer.model.devices import check_device
from trainer.model.source import resolve_base_model
from trainer.model.model_dirs import is_valid_model_dir

logger = logging.getLogger(__name__)

MIXED_DATA = Path("data") / "train.jsonl"


class GroupLauncher(Protocol):
    """Runs ``trainctl ARGV`` in every process of a torchrun group for ``run`` (``core.child.torchrun``,
    ``run_in_group``) and returns the group's exit code."""

    def __call__(self, config: TrainConfig, argv: list[str], run: Run) -> int: ...


@dataclass(frozen=True)
class RunRequest:
    """How ``trainctl run`` was asked to run.

    Attributes:
        base_dir: base directory; relative paths in configs start here, runs go to ``runs/``.
        resume: ``auto`` (continue the same unfinished run), ``none``, or a checkpoint path.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        pipeline: the pipeline config file, when the phase is part of one.
        launch_group: starts a phase whose ``distributed`` section needs torchrun (several
            processes, or FSDP); None refuses such a phase.
    """

    base_dir: Path
    resume: str = "auto"
    device: str = "auto"
    pipeline: Path | None = None
    launch_group: GroupLauncher | None = None

    @property
    def runs_root(self) -> Path:
        return BaseDir.at(self.base_dir).runs


def _same_phase(run: Run, loaded: LoadedPhase, request: RunRequest) -> bool:
    record = run.record
    return (
        record.get("phase") == loaded.config.phase
        and record.get("config_file") == str(loaded.path.resolve())
        and record.get("pipeline") == (str(request.pipeline) if request.pipeline else None)
    )


def find_previous_run(loaded: LoadedPhase, request: RunRequest) -> Run | None:
    """The newest run of the same phase config (and pipeline), whatever its status."""
    matching = [run for run in list_runs(request.runs_root) if _same_phase(run, loaded, request)]
    return matching[-1] if matching else None


def _explicit_checkpoint(request: RunRequest) -> Path:
    checkpoint = Path(request.resume)
    checkpoint = checkpoint if checkpoint.is_absolute() else request.base_dir / checkpoint
    if (problem := checkpoint_problem(checkpoint)) is not None:
        raise UserError(f"--resume {request.resume}: {problem}; pass a complete checkpoint-N folder")
    return checkpoint.resolve()


def _changed_data(previous: Run, data: list[dict]) -> list[str]:
    """Data files whose content differs from when ``previous`` started."""
    before = {entry["path"]: entry["sha256"] for entry in previous.record.get("data_files", [])}
    changed = [entry["path"] for entry in data if before.get(entry["path"]) != entry["sha256"]]
    for path in changed:
        logger.warning("run %s: data file %s changed since the run started", previous.id, path)
    return changed


def _open_run(loaded: LoadedPhase, request: RunRequest, model_source: str) -> tuple[Run, Path | None]:
    """Start a new run or reopen the unfinished one to continue; returns it and the checkpoint."""
    training = loaded.config.training
    data = [
        data_file_record(request.base_dir / source.path, source.weight) for source in loaded.config.data
    ]
    checkpoint = None
    if request.resume not in ("auto", "none"):
        checkpoint = _explicit_checkpoint(request)
    elif request.resume == "auto" and training.checkpoint.resume:
        previous = find_previous_run(loaded, request)
        if previous and previous.status is not RunStatus.COMPLETED:
            latest = latest_checkpoint(previous.checkpoints)
            if latest is not None:
                changed = _changed_data(previous, data)
                return reopen_run(previous, from_checkpoint=str(latest), changed_data=changed), latest
            logger.info("run %s has no complete checkpoint; starting a new run", previous.id)
    run = start_run(
        request.runs_root,
        phase=loaded.config.phase,
        config=training,
        config_file=loaded.path.resolve(),
        config_text=loaded.text,
        data_files=data,
        base_dir=request.base_dir,
        extra={
            "pipeline": str(request.pipeline) if request.pipeline else None,
            "model_source": model_source,
            "resumed_from": str(checkpoint) if checkpoint else None,
        },
    )
    return run, checkpoint


def run_phase(loaded: LoadedPhase, request: RunRequest, model_source: str | None = None) -> Run:
    """Train one phase in its run folder; returns the finished run.

    With ``distributed`` asking for several processes (or FSDP), this process opens the run folder
    and mixes the data, then ``request.launch_group`` trains the phase in a torchrun group (see
    :func:`train_group_member`), whose rank 0 records the result in the same folder.

    Args:
        loaded: the phase config.
        request: base dir, resume choice, device.
        model_source: model to start from; default the phase's ``training.base_model``.
            A continued run keeps the model source it was started with.

    Raises:
        UserError: bad data, device, or resume checkpoint, or the group's training did not complete
            (the run, if started, is marked failed).
    """
    training = loaded.config.training
    model_source = model_source or resolve_base_model(request.base_dir, training)
    run, checkpoint = _open_run(loaded, request, model_source)
    with run:
        train_file, rows = mix_data(loaded, request.base_dir, run.path / MIXED_DATA)
        logger.info("run %s: %s phase on %d mixed rows", run.id, loaded.config.phase, rows)
        if needs_torchrun(training.distributed):
            return _train_in_group(loaded, request, run, checkpoint)
        job = start_job(
            run, training, loaded.text, train_file, base_dir=request.base_dir,
            model_source=run.record["model_source"], output_dir=run.checkpoints,
            label=f"{loaded.config.phase} {run.id}", resume=checkpoint, device=request.device,
        )
        result = job.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        finish_job(run, job, result, run.model_dir)
    return run


def _train_in_group(loaded: LoadedPhase, request: RunRequest, run: Run, checkpoint: Path | None) -> Run:
    """Train the phase of the open ``run`` under torchrun: every process runs this phase's
    ``trainctl run`` as a member of ``run``; the run as rank 0 recorded it."""
    if request.launch_group is None:
        raise UserError(f"{loaded.path}: training.distributed needs torchrun (several processes or FSDP); "
                        "start this phase with `trainctl run`, which launches it")
    argv = [
        "run", "--phase", loaded.config.phase, "--config", str(loaded.path.resolve()),
        "--base-dir", str(request.base_dir.resolve()), "--device", request.device,
        *(["--resume", str(checkpoint)] if checkpoint else ["--no-resume"]),
    ]
    code = request.launch_group(loaded.config.training, argv, run)
    run.record = (read_run(run.path) or run).record
    if run.status is not RunStatus.COMPLETED:
        raise UserError(
            f"{loaded.config.phase} phase of run {run.id} ended {run.status.value} under torchrun (exit code "
            f"{code}); see {run.log_file}, then run the same command again to continue from its last checkpoint"
        )
    return run


def train_group_member(loaded: LoadedPhase, request: RunRequest, run_path: Path) -> None:
    """One process of a torchrun group training ``loaded`` in the run folder its launcher opened.

    The launcher recorded the model source and mixed the data; ``request.resume`` names the
    checkpoint (or ``none``). Global rank 0 records in the run; the others only train.
    """
    record = (read_run(run_path) or Run(run_path, {})).record
    checkpoint = _explicit_checkpoint(request) if request.resume not in ("auto", "none") else None
    run = Run(run_path, record) if is_main_process() else FollowerRun(run_path)
    if isinstance(run, Run):
        run.attach_log()
    with run:
        job = start_job(
            run, loaded.config.training, loaded.text, run_path / MIXED_DATA, base_dir=request.base_dir,
            model_source=record["model_source"], output_dir=run.checkpoints,
            label=f"{loaded.config.phase} {run.id}", resume=checkpoint, device=request.device,
            tensorboard_server=is_main_process(),
        )
        result = job.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        finish_job(run, job, result, run.model_dir)


def _completed_in_pipeline(loaded: LoadedPhase, request: RunRequest) -> Run | None:
    """The completed run of this pipeline phase whose model is still valid, if any."""
    if request.resume != "auto" or not loaded.config.training.checkpoint.resume:
        return None
    previous = find_previous_run(loaded, request)
    if previous and previous.status is RunStatus.COMPLETED and is_valid_model_dir(previous.model_dir):
        return previous
    return None


def run_command(phase: str, config_file: Path, request: RunRequest) -> list[Run]:
    """What ``trainctl run`` does: check everything first, then train each phase in order.

    Returns:
        The phases' runs; [] in a process of a torchrun group, whose launcher reports the run.

    Raises:
        UserError: bad config, missing data files (all listed), unusable device, or a ``distributed``
            section this machine cannot run (each problem naming its file and field); raised before
            any model is loaded.
    """
    config_file = config_file if config_file.is_absolute() else request.base_dir / config_file
    if phase == "pipeline":
        phases = load_pipeline(config_file, request.base_dir)
        request = replace(request, pipeline=config_file.resolve())
    else:
        phases = [load_phase(config_file, expected=phase)]
    check_data_files(phases, request.base_dir)
    check_device(request.device)
    if problems := [f"{loaded.path}: {problem}" for loaded in phases
                    for problem in distributed_problems(loaded.config.training.distributed)]:
        raise UserError("; ".join(problems))
    if (member_of := os.environ.get(GROUP_RUN_ENV)) is not None:  # one process of a torchrun group
        train_group_member(phases[0], request, Path(member_of))
        return []
    if request.resume not in ("auto", "none") and len(phases) > 1:
        raise UserError("--resume PATH names one checkpoint; use it with --phase pretrain or sft")
    runs: list[Run] = []
    model_source = None
    for loaded in phases:
        done = _completed_in_pipeline(loaded, request) if request.pipeline else None
        if done is not None:
            logger.info("%s phase already completed in run %s; reusing its model", loaded.config.phase, done.id)
            run = done
        else:
            run = run_phase(loaded, request, model_source)
        runs.append(run)
        model_source = str(run.model_dir)
    return runs
