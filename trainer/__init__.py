"""The machine learning: config, data, model, builders, callbacks, evaluation and checkpoints.

It never imports the service (``core``) except its shared base, ``core.base``."""
