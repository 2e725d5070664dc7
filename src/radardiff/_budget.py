"""What a request will cost, checked before and while it runs: disk space and time.

A request that cannot fit (``downstream pairs --n 1000000000`` once wrote tens of GB before
the disk filled) is refused before anything is written, by :func:`check_space` on its
estimated size; one that fits but would run for more than a day is reported once by
:class:`Pace`, from the measured speed of its first work, so that a typo in ``--n`` is seen in
minutes, not noticed after days.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from radardiff.errors import DiskFullError

log = logging.getLogger(__name__)

DAY_S = 86400.0
# what a request may take of the free space: the rest is left to the system and to other files
SPACE_FRACTION = 0.95


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * DAY_S:
        return f"{s / 3600:.1f} h"
    return f"{s / DAY_S:.1f} days"


def _existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes for an unprivileged writer on the file system that will hold ``path``."""
    return shutil.disk_usage(_existing(Path(path))).free


def check_space(path: str | os.PathLike, nbytes: float, what: str) -> None:
    """Refuse, in one line, a write of about ``nbytes`` to ``path`` that the free space of its
    file system cannot hold (more than :data:`SPACE_FRACTION` of it)."""
    free = free_bytes(path)
    if nbytes > SPACE_FRACTION * free:
        raise DiskFullError(
            f"{path}: {what} needs about {human_bytes(nbytes)} but {_existing(Path(path))} has "
            f"{human_bytes(free)} free; ask for less or free some space (nothing written)"
        )


class Pace:
    """Warns once when the measured pace of a request says it will take more than a day.

    Call :meth:`done` after each unit of work with the count finished so far (``skipped``: how
    many of them were not computed, such as resumed parts); the estimate starts once
    ``min_seconds`` of work have been timed, so that set-up costs do not inflate it.
    """

    def __init__(self, what: str, total: int, min_seconds: float = 2.0) -> None:
        self.what, self.total, self.min_seconds = what, total, min_seconds
        self.t0 = time.perf_counter()
        self.warned = False

    def done(self, count: int, skipped: int = 0) -> None:
        if self.warned or count >= self.total:
            return
        elapsed = time.perf_counter() - self.t0
        computed = count - skipped
        if elapsed < self.min_seconds or computed <= 0:
            return
        left = (self.total - count) * elapsed / computed
        if left > DAY_S:
            self.warned = True
            log.warning(
                "%s: at the pace so far (%d of %d in %s) the rest needs about %s; stop it "
                "(Ctrl-C) if that was not meant",
                self.what, count, self.total, human_seconds(elapsed), human_seconds(left),
            )  # fmt: skip
