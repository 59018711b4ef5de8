"""State files of a base dir: its layout (``BaseDir``, the only place that builds its paths), the status
JSON, the event log and the ledger of trained contents. Imports ``core.base`` and ``trainer.config``."""
