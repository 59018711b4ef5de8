"""``tracking.report_to``: TensorBoard by default through the run's own callback; other trackers
only through ``TrainingArguments.report_to`` and only when installed."""

from __future__ import annotations

import importlib.util

import pytest

from trainer.builders import build_training_arguments
from trainer.config import ConfigError, TrainConfig, parse_config


def test_the_default_reports_to_tensorboard_only_through_the_runs_own_callback(tmp_path):
    config = TrainConfig()
    assert config.tracking.report_to == ["tensorboard"]
    assert build_training_arguments(config, tmp_path, "fp32").report_to in ([], "none", ["none"])


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_tracker_that_is_not_installed_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(ConfigError) as error:
        parse_config({"tracking": {"report_to": ["tensorboard", "wandb"]}}, tmp_path / "config.json")
    assert "tracking.report_to" in str(error.value) and "pip install wandb" in str(error.value)
