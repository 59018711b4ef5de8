"""``python -m core.training_daemon --base-dir DIR [--once]``: start the daemon, as ``trainctl daemon`` does.

The daemon itself lives in ``core.daemon`` (the loop in ``core.daemon.loop``, this entry point's
options in ``core.daemon.service``). Importing this module imports nothing else: the processes
that tokenize a large file in parts (``trainer/data/file_pass.py``) are spawned, and a spawned
process imports the main module again, which should cost them nothing.
"""

import sys

if __name__ == "__main__":
    from core.daemon.service import main

    sys.exit(main())
