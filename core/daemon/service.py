"""Running the daemon as a service: logging to ``logs/daemon.log``, the exit codes, the entry point.

``python -m core.training_daemon --base-dir DIR [--once]`` and ``trainctl daemon`` both end here.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
from pathlib import Path

from core.daemon.lock import DaemonLockedError
from core.daemon.loop import TrainingDaemon
from core.state.layout import BaseDir

logger = logging.getLogger(__name__)

EXIT_LOCKED = 3  # another daemon holds the base dir; systemd must not restart on it
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(layout: BaseDir, level: str = "INFO") -> None:
    """Log to stderr and to ``logs/daemon.log`` (rotated at 10 MB, five old files kept)."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)  # no-op when trainctl already did it
    layout.logs.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        layout.logs / "daemon.log", maxBytes=10 * 2**20, backupCount=5, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)


def serve(base_dir: Path, once: bool = False, log_level: str = "INFO") -> int:
    """Run the daemon on ``base_dir`` until stopped.

    Returns:
        The exit code: 0 after a clean stop, 2 when ``once`` found no usable config.json, 1 when
        ``once`` filed a file untrained (invalid, failed, rejected) or stopped on a full disk or an
        environment fault, :data:`EXIT_LOCKED` when another daemon runs on ``base_dir``. ``once``
        ends with the count line on stdout: ``trained N, duplicate N, invalid N, failed N``.
    """
    daemon = TrainingDaemon(base_dir)
    setup_logging(daemon.layout, log_level)
    try:
        code = daemon.run_forever(once=once)
    except DaemonLockedError as exc:
        logger.error("%s", exc)
        return EXIT_LOCKED
    if once:
        print(daemon.counts.line(), flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """``python -m core.training_daemon --base-dir DIR [--once]``."""
    parser = argparse.ArgumentParser(prog="python -m core.training_daemon", description="The training daemon: an inbox file in, a promoted snapshot out.")
    parser.add_argument("--base-dir", type=Path, default=Path.cwd(), help="base directory (default: .)")
    parser.add_argument("--once", action="store_true", help="drain the inbox, then exit")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    args = parser.parse_args(argv)
    return serve(args.base_dir, args.once, args.log_level)
