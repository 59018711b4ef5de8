"""``python -m core.cli``: the same as ``trainctl``."""

import sys

from core.cli import main

sys.exit(main())
