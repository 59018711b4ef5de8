"""Snapshots: the immutable model folders (``store``), what each lists and the checks before promotion
(``manifest``), the stack of promotions (``history``), and a finished run becoming current (``promotion``).
Imports ``core.base``, ``core.state`` and ``trainer``."""
