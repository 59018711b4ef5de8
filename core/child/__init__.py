"""The training child process: how it is launched and waited for (``launcher``, ``supervisor``), what it
runs (``worker``, ``progress``), and the file names and exit codes both sides agree on (``protocol``).
Imports ``core.base``, ``core.state``, ``core.runs`` and ``trainer``; never ``core.daemon``."""
