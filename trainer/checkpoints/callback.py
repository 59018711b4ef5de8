"""The ``TrainerCallback`` that marks each HF checkpoint complete and prunes old ones."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from transformers import TrainerCallback

from core.base.atomic import fsync_dir
from trainer.checkpoints.markers import (
    MARKER_NAME,
    prune_checkpoints,
    remove_incomplete,
    write_completion_marker,
)
from trainer.config import TrainConfig
from trainer.distributed import wait_for_all_ranks

logger = logging.getLogger(__name__)


class CheckpointCallback(TrainerCallback):
    """Marks each HF checkpoint complete, then prunes old ones.

    Pass ``save_total_limit=None`` to ``TrainingArguments`` so HF's own rotation stays out of the way.

    Args:
        config_text: the run's config file, copied verbatim into each checkpoint.
        config: the resolved config (recorded in the marker; ``checkpoint.keep_last`` is used).
        protect: checkpoints never pruned, e.g. the one this run resumed from.
    """

    def __init__(self, config_text: str, config: TrainConfig, *, protect: Iterable[Path] = ()):
        self.config_text = config_text
        self.config = config
        self.protect = [Path(p) for p in protect]

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            remove_incomplete(Path(args.output_dir))

    def on_step_end(self, args, state, control, **kwargs):
        # HF is about to overwrite checkpoint-N in place; drop its old marker first so a crash
        # midway cannot leave old marker + new files that happen to have the same sizes.
        if control.should_save and state.is_world_process_zero:
            marker = Path(args.output_dir) / f"checkpoint-{state.global_step}" / MARKER_NAME
            if marker.exists():
                marker.unlink()
                fsync_dir(marker.parent)

    def on_save(self, args, state, control, model=None, **kwargs):
        wait_for_all_ranks()  # under torchrun the other ranks write parts of the checkpoint too
        if not state.is_world_process_zero:
            return
        root = Path(args.output_dir)
        checkpoint = root / f"checkpoint-{state.global_step}"
        write_completion_marker(
            checkpoint, config_text=self.config_text, config=self.config, model_config=model.config
        )
        logger.info("checkpoint %s complete (step %d)", checkpoint, state.global_step)
        protect = list(self.protect)
        if state.best_model_checkpoint:
            protect.append(root / Path(state.best_model_checkpoint).name)
        prune_checkpoints(root, self.config.checkpoint.keep_last, protect=protect)
