"""Setting up one training job inside its run folder: the one place every entry point goes through.

``trainctl train`` (:func:`train_file`), ``trainctl run`` (``core.runs.runner``) and the daemon's
training child (``core.child.worker``) all call :func:`start_job`, so that callbacks, the resume
check and the TensorBoard link are the same whichever way a run was started.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from transformers import TrainerCallback

from core.base.errors import UserError
from core.runs.follower import FollowerRun
from core.runs.run import Run, RunStatus, data_file_record, read_run, run_results, start_run
from core.runs.tensorboard import ensure_tensorboard
from core.state.layout import BaseDir
from core.train import Replay, TrainResult, UltimateTrainer
from trainer.callbacks import build_run_callbacks
from trainer.checkpoints.resume import ResumeError, check_resume_compatible
from trainer.config import TrainConfig, config_to_dict
from trainer.distributed import is_main_process, world_size

logger = logging.getLogger(__name__)

GROUP_RUN_ENV = "TRAINCTL_GROUP_RUN"  # the run folder of a `trainctl train` under torchrun


def start_job(
    run: Run,
    config: TrainConfig,
    config_text: str,
    data_file: Path,
    *,
    base_dir: Path,
    model_source: str,
    output_dir: Path,
    label: str,
    resume: Path | None = None,
    device: str = "auto",
    extra_callbacks: Sequence[TrainerCallback] = (),
    tensorboard_server: bool = True,
    replay: Replay = (),
) -> UltimateTrainer:
    """Build and set up the ``UltimateTrainer`` of ``run``: callbacks, model, data, resume check.

    Args:
        run: the open run folder (its TensorBoard folder receives the curves).
        config: the resolved config; ``config_text`` is its file, copied into each checkpoint.
        data_file: the JSONL file to train on.
        base_dir: the base directory (relative paths start there).
        model_source: the model or adapter to start from.
        output_dir: where step checkpoints go.
        label: shown in progress lines.
        resume: the checkpoint this job continues from, checked against config and model.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        extra_callbacks: more callbacks, after the run's own (a checkpoint is complete before they see it).
        tensorboard_server: start (or reuse) this process's TensorBoard server and record its URL;
            the daemon runs its own server, so its child passes False.
        replay: examples of earlier files to mix into the training rows (``core.memory``), or a
            function of the number of training rows that draws them (``UltimateTrainer``).

    Raises:
        UserError: the resume checkpoint cannot continue under this config or model.
    """
    callbacks = build_run_callbacks(
        config, config_text, label=label, tensorboard_dir=run.tensorboard, resume_from=resume
    )
    job = UltimateTrainer(
        config, data_file, base_dir=base_dir, model_source=model_source, output_dir=output_dir,
        callbacks=[*callbacks, *extra_callbacks], device=device, replay=replay,
    )
    job.setup()
    if resume is not None:
        try:
            warnings = check_resume_compatible(resume, config, job.model.config, world_size())
        except ResumeError as exc:
            raise UserError(str(exc)) from None
        run.update(resume_warnings=warnings)
    if tensorboard_server:
        run.update(tensorboard_url=ensure_tensorboard(run.path.parent))
    return job


def finish_job(run: Run, job: UltimateTrainer, result: TrainResult, model_dir: Path) -> None:
    """Save the trained model to ``model_dir`` and mark the run completed with its results."""
    job.save(model_dir, result)
    run.finish(RunStatus.COMPLETED, **run_results(result, job.trainer.state, model_dir))


def train_file(
    config: TrainConfig,
    data_file: Path,
    base_dir: Path,
    *,
    output: Path | None = None,
    config_text: str | None = None,
) -> tuple[TrainResult, Path]:
    """``trainctl train``: train the current model (or ``base_model``) on one file in a new run.

    The run gets ``runs/<time>/`` (run.json, train.log, TensorBoard events, checkpoints).

    Returns:
        The result and the saved model dir (default ``runs/<time>/model``).
    """
    config_text = config_text or json.dumps(config_to_dict(config))
    model_source = BaseDir.at(base_dir).model_source(config)
    shared = os.environ.get(GROUP_RUN_ENV)
    if shared is None:
        run = open_train_run(config, config_text, data_file, base_dir)
    else:  # one of a torchrun group: the process that started the group opened the run folder
        run = _group_run(Path(shared))
    with run:
        model_dir = Path(output) if output else run.model_dir
        job = start_job(
            run, config, config_text, data_file, base_dir=base_dir, model_source=model_source,
            output_dir=run.checkpoints, label=f"{data_file.name} {run.id}", tensorboard_server=is_main_process(),
        )
        result = job.train()
        finish_job(run, job, result, model_dir)
    return result, model_dir


def open_train_run(
    config: TrainConfig, config_text: str, data_file: Path, base_dir: Path, processes: int | None = None
) -> Run:
    """The new ``runs/<time>/`` of a ``trainctl train``; under torchrun (``processes`` given) it is
    opened before the group starts, and its path handed to every process in :data:`GROUP_RUN_ENV`."""
    extra = {"model_source": BaseDir.at(base_dir).model_source(config), "processes": processes or 1,
             "launcher": "python" if processes is None else "torchrun"}
    return start_run(
        BaseDir.at(base_dir).runs, phase="train", config=config, config_text=config_text,
        data_files=[data_file_record(data_file)], base_dir=base_dir, extra=extra,
    )


def _group_run(path: Path) -> Run | FollowerRun:
    """This process's view of the run folder its group's launcher opened: rank 0 records in it."""
    if not is_main_process():
        return FollowerRun(path)
    run = read_run(path)
    run.attach_log()
    return run
