"""``python -m core.training_daemon --base-dir DIR [--once]``: start the daemon, as ``trainctl daemon`` does.

The daemon itself lives in ``core.daemon`` (the loop in ``core.daemon.loop``, this entry point's
options in ``core.daemon.service``).
"""

import sys

from core.daemon.service import main

if __name__ == "__main__":
    sys.exit(main())
