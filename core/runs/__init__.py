"""Runs: one folder per training run under ``runs/`` (``run``), the one setup of a training job that every
entry point uses (``job``), ``trainctl run`` phases and pipelines (``phases``, ``runner``), TensorBoard.
Imports ``core.base``, ``core.train`` and ``trainer``."""
