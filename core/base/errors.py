"""The base class of errors caused by user input (config, data, model paths), and telling a full disk.

The CLI prints a ``UserError`` as one clear message and exits 2; anything else is a bug and keeps
its traceback. A full disk is neither: :func:`is_disk_full` lets the daemon keep the file and retry
it once there is space again, instead of failing it.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
LOW_SPACE_BYTES = 1 << 20


class UserError(Exception):
    """A problem the user can fix; the message says what and how."""


def is_disk_full(exc: BaseException, folder: Path | None = None) -> bool:
    """Whether ``exc``, or an exception it was raised from, means a disk or quota ran out of space.

    ``torch.save`` reports a full disk only as a failed write ("unexpected pos"), so when ``folder``
    is given, less than :data:`LOW_SPACE_BYTES` free on its file system counts as a full disk too.
    """
    seen: BaseException | None = exc
    for _ in range(20):  # a context chain can loop
        if seen is None:
            break
        if (isinstance(seen, OSError) and seen.errno in NO_SPACE_ERRNOS) or "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    if folder is None:
        return False
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False
