"""The service that runs the machine learning of ``trainer/``: daemon, training child, snapshots, runs,
state files and the ``trainctl`` CLI. ``core.train`` holds ``UltimateTrainer``, the recipe that assembles
``trainer/`` pieces into one job. Import rule: ``core`` may import ``trainer`` and ``profiles``; they import
only ``core.base`` back. See docs/architecture.md."""
