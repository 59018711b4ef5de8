"""Step checkpoints you can trust: completion markers, listing and pruning (``markers``), the resume
check (``resume``) and the callback that marks each HF checkpoint complete (``callback``)."""
