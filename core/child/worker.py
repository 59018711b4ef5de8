"""The training child: train one claimed file, report progress, stop cleanly on SIGTERM.

Run by the daemon through ``core.child.launcher.launch_training``::

    python -m core.child.worker --base-dir D --file F --output OUT [--config C] [--model-source M]
                                [--resume CKPT]

or started ahead as a standby child (``--standby FD``, see ``core.child.warmup``), which gets the same
arguments over a socket once the file is known.

``OUT`` is the file's work folder: ``checkpoints/`` (step checkpoints), ``model/`` (the trained
model) and ``result.json`` (what happened, written atomically for the daemon). Each file also gets a
run folder ``runs/<time>/`` (run.json, train.log, TensorBoard events); a resumed attempt reopens it. The exit code tells
the daemon the outcome: 0 trained, :data:`EXIT_INTERRUPTED` stopped at a checkpoint on SIGTERM,
:data:`EXIT_DISK_FULL` a write failed for lack of space (a half-written checkpoint is removed to give
its space back), any other value failed. A SIGTERM only sets a flag; :class:`ProgressCallback` turns
it into "save a checkpoint and stop" at the next step boundary, so the run can resume exactly there.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from dataclasses import asdict
from pathlib import Path

from core.base.atomic import atomic_write_json, atomic_write_text
from core.base.errors import is_disk_full
from core.child.agent import TORCHRUN_ENV, parent_death_signal, set_parent_death_signal
from core.child.gate_run import GateRun
from core.child.progress import ProgressCallback, StopFlag
from core.child.protocol import (
    CHECKPOINTS_DIRNAME,
    EXIT_DISK_FULL,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TRAINED,
    MODEL_DIRNAME,
    PARENT_PID_ENV,
    RESULT_FILENAME,
    RUN_POINTER,
    STANDBY_OPTION,
)
from core.child.warmup import serve_standby
from core.runs.follower import FollowerRun
from core.runs.job import finish_job, start_job
from core.runs.run import Run, RunStatus, data_file_record, read_run, reopen_run, start_run
from core.state.events import EventLog
from core.state.layout import BaseDir
from core.state.status import StatusFile
from trainer.checkpoints.markers import remove_incomplete
from trainer.config import TrainConfig, load_config
from trainer.distributed import is_main_process, world_size

logger = logging.getLogger(__name__)


def stop_with_parent(stop: StopFlag) -> None:
    """Get SIGTERM when the daemon dies (Linux ``PR_SET_PDEATHSIG``).

    The child runs in its own session, so nothing else stops it: an orphan would keep training
    while a restarted daemon resumes the same file. With this it checkpoints and exits instead.
    Under torchrun the parent is torchrun's agent (see ``core.child.agent``).
    """
    if not set_parent_death_signal(parent_death_signal()):
        logger.debug("prctl is not available; the child will not notice if the daemon dies")
        return
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):
        logger.warning("the daemon (pid %s) exited before training started; stopping", expected)
        stop.requested = True


def run(args: argparse.Namespace, stop: StopFlag) -> int:
    """Train ``args.file``; write ``result.json``; return the exit code. SIGTERM sets ``stop``."""
    layout = BaseDir.at(args.base_dir)
    output = Path(args.output)
    config_path = Path(args.config) if args.config else layout.config_file
    stop_with_parent(stop)
    config = load_config(config_path)
    resume = Path(args.resume) if args.resume else None
    progress = ProgressCallback(
        StatusFile(layout.status_file), EventLog(layout.events_file), args.file.name, stop
    )
    config_text = config_path.read_text(encoding="utf-8")
    model_source = args.model_source or layout.model_source(config)
    main_process = is_main_process()  # under torchrun only rank 0 writes the run, status and result
    run_folder = open_file_run(layout, output, config, config_text, args.file, model_source, resume) \
        if main_process else FollowerRun()
    gate = GateRun(layout, config, args.file, model_source, measure=main_process)
    with run_folder as run:
        trainer = start_job(
            run, config, config_text, args.file, base_dir=layout.root, model_source=model_source,
            output_dir=output / CHECKPOINTS_DIRNAME, label=args.file.name, resume=resume,
            extra_callbacks=[progress], tensorboard_server=False, replay=gate.draw_replay,
        )
        gate.measure_before(trainer)  # the model as loaded is the current model, also on a resume
        if main_process:
            progress.status.update(attention_backend=trainer.attention.value)
        if stop.requested:
            run.finish(RunStatus.INTERRUPTED)
            return _finish(output, "interrupted", EXIT_INTERRUPTED, steps=None, resumed_from=args.resume)
        result = trainer.train(resume_from_checkpoint=args.resume)
        state = trainer.trainer.state
        if stop.requested and state.global_step < state.max_steps:
            run.finish(RunStatus.INTERRUPTED, steps=state.global_step)
            return _finish(
                output, "interrupted", EXIT_INTERRUPTED, steps=state.global_step, resumed_from=args.resume
            )
        finish_job(run, trainer, result, output / MODEL_DIRNAME)
        measured = gate.measure_after(trainer, output / MODEL_DIRNAME)
    return _finish(output, "trained", EXIT_TRAINED, **asdict(result), resumed_from=args.resume, run=run.id,
                   gate=measured)


def open_file_run(
    layout: BaseDir, output: Path, config: TrainConfig, config_text: str, data_file: Path,
    model_source: str, resume: Path | None,
) -> Run:
    """The file's run folder: reopened when this attempt resumes one, else a new ``runs/<time>/``.

    The work folder keeps a pointer (``run.txt``) to it, so every attempt on a file lands in one run.
    """
    pointer = output / RUN_POINTER
    previous = read_run(Path(pointer.read_text().strip())) if pointer.exists() else None
    launch = {"launcher": "torchrun" if TORCHRUN_ENV in os.environ else "python", "processes": world_size()}
    if previous is not None and resume is not None:
        return reopen_run(previous, from_checkpoint=str(resume), **launch)
    run = start_run(
        layout.runs, phase="daemon", config=config, config_text=config_text,
        data_files=[data_file_record(data_file)], base_dir=layout.root,
        extra={"model_source": model_source, "work_dir": str(output), **launch},
    )
    atomic_write_text(pointer, f"{run.path}\n")
    return run


def _finish(output: Path, outcome: str, code: int, **fields) -> int:
    if not is_main_process():
        return code  # rank 0 writes the group's result
    try:
        atomic_write_json(output / RESULT_FILENAME, {"outcome": outcome, "exit_code": code, **fields})
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        logger.error("%s: cannot write %s: %s", output.name, RESULT_FILENAME, exc)
        return EXIT_DISK_FULL
    logger.info("%s: %s (exit %d)", output.name, outcome, code)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.child.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--base-dir", required=True, type=Path, help="the daemon's base directory")
    parser.add_argument("--file", type=Path, help="the claimed JSONL file to train on (required)")
    parser.add_argument("--output", type=Path, help="the run's work folder (required)")
    parser.add_argument(
        "--model-source", help="model or adapter dir (or hub id) to start from (default: current_model, "
        "else base_model)"
    )
    parser.add_argument("--config", type=Path, help="config file to use (default: BASE_DIR/config.json)")
    parser.add_argument("--resume", help="checkpoint folder to resume from")
    parser.add_argument(
        STANDBY_OPTION, type=int, metavar="FD", help="start as a standby child: warm up, then read the other "
        "arguments from the daemon on socket FD (core.child.protocol)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the training child; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.INFO if is_main_process() else logging.WARNING  # one progress log, not one per rank
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.standby is not None:
        args = parser.parse_args(serve_standby(args.standby, args.base_dir))
    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop.request)
    if args.file is None or args.output is None:
        parser.error("--file and --output are required")
    args.output.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, stop)
    except Exception as exc:
        logger.exception("training %s failed", args.file.name)
        code = EXIT_DISK_FULL if is_disk_full(exc, args.output) else EXIT_FAILED
        if code == EXIT_DISK_FULL and is_main_process():
            # A half-written checkpoint only keeps the disk full; the last complete one is kept.
            remove_incomplete(args.output / CHECKPOINTS_DIRNAME)
        return _finish(
            args.output, "failed", code, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(),
        )


if __name__ == "__main__":
    sys.exit(main())
