"""The ``tracking`` section of config.json: experiment trackers beside TensorBoard."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import Field, field_validator

from trainer.config.schema_base import StrictModel


class TrackingSettings(StrictModel):
    """Where training curves are reported, through ``TrainingArguments.report_to``."""

    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=lambda: ["tensorboard"])
    """Trackers for each run. TensorBoard events are always written to ``runs/<id>/tensorboard/``
    (the dashboard's loss curve reads them). ``wandb`` and ``mlflow`` are optional: install the
    package (``pip install wandb`` or ``mlflow``) and configure it through its own environment
    variables (``WANDB_PROJECT``, ``MLFLOW_TRACKING_URI``, ...); trainctl never needs them."""

    @field_validator("report_to")
    @classmethod
    def _installed(cls, names: list[str]) -> list[str]:
        missing = [name for name in names if importlib.util.find_spec(name) is None]
        if missing:
            raise ValueError(
                f"tracking.report_to names {', '.join(missing)}, which is not installed; "
                f"run `pip install {' '.join(missing)}` or remove it from tracking.report_to"
            )
        return list(dict.fromkeys(names))
