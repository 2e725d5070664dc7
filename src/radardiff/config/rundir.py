"""The run directory: the files that stages hand each other.

```
RUN/config.toml  normalizer.json  data_info.json  stats.jsonl
RUN/checkpoints/step_0001000/{model,ema,optimizer.pt,state.json}   RUN/checkpoints/{latest,best}
RUN/samples/*.h5  RUN/eval/metrics.json  RUN/report/index.html
```
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from radardiff.errors import RunDirError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected there
    fcntl = None

_CHECKPOINT_NAME = re.compile(r"step_\d{7,}")
CHECKPOINT_POINTERS = ("latest", "best")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    config = property(lambda self: self.root / "config.toml")
    normalizer = property(lambda self: self.root / "normalizer.json")
    data_info = property(lambda self: self.root / "data_info.json")
    stats = property(lambda self: self.root / "stats.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    latest_file = property(lambda self: self.root / "checkpoints" / "latest")
    samples = property(lambda self: self.root / "samples")
    eval = property(lambda self: self.root / "eval")
    metrics = property(lambda self: self.root / "eval" / "metrics.json")
    report = property(lambda self: self.root / "report")
    tensorboard = property(lambda self: self.root / "tensorboard")

    @staticmethod
    def checkpoint_name(step: int) -> str:
        return f"step_{step:07d}"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / self.checkpoint_name(step)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint, or None when the run has none yet."""
        return self._pointed("latest")

    def best_checkpoint(self) -> Path | None:
        """The checkpoint of lowest validation loss, or None when the run never validated."""
        return self._pointed("best")

    def _pointed(self, pointer: str) -> Path | None:
        file = self.checkpoints / pointer
        if not file.is_file():
            return None
        name = file.read_text(encoding="utf-8").strip()
        if not _CHECKPOINT_NAME.fullmatch(name):  # never a path out of the run
            raise RunDirError(f"{file}: holds '{name}', not a checkpoint name (step_NNNNNNN)")
        path = self.checkpoints / name
        if not (path / "state.json").is_file():
            raise RunDirError(f"{file}: points to '{name}', which is not a complete checkpoint")
        return path

    def named_checkpoint(self, which: int | str) -> Path:
        """A complete checkpoint of this run: a step number, a name (``step_0004000``),
        ``latest`` or ``best`` (lowest validation loss; the latest, with a warning, when the run
        has no validation set)."""
        self.require()
        if which in CHECKPOINT_POINTERS:
            if which == "best":
                best = self.best_checkpoint()
                if best is not None:
                    return best
                log.warning(
                    "%s: no validation loss was recorded (no data.val), so there is no best "
                    "checkpoint; sampling the latest",
                    self.root,
                )
            return self.require_checkpoint()
        if isinstance(which, int) or str(which).isdigit():
            name = self.checkpoint_name(int(which))
        else:
            name = str(which)
        if not _CHECKPOINT_NAME.fullmatch(name):
            raise RunDirError(
                f"checkpoint '{which}': give latest, best, a step number or a name step_NNNNNNN"
            )
        path = self.checkpoints / name
        if not (path / "state.json").is_file():
            have = sorted(p.name for p in self.checkpoints.glob("step_*") if p.is_dir())
            raise RunDirError(
                f"{self.root}: no complete checkpoint '{name}' (has: {', '.join(have) or 'none'})"
            )
        return path

    def lock(self) -> RunLock:
        """Take the run's exclusive lock (see :class:`RunLock`); RunDirError when it is held."""
        return RunLock(self.root / ".lock")

    def require(self) -> None:
        """Refuse a directory that is not a run (no config.toml)."""
        if not self.root.is_dir():
            raise RunDirError(f"{self.root}: run directory not found")
        if not self.config.is_file():
            raise RunDirError(f"{self.root}: not a run directory (no config.toml)")

    def require_checkpoint(self) -> Path:
        self.require()
        ckpt = self.latest_checkpoint()
        if ckpt is None:
            raise RunDirError(f"{self.root}: run has no complete checkpoint (train it first)")
        return ckpt


class RunLock:
    """An exclusive advisory lock on a run directory, held by one process at a time.

    ``RUN/.lock`` is locked with ``flock`` and holds the holder's PID, host and start time. A
    second process is refused with a line naming the holder. The kernel releases the lock when
    its holder dies, however it dies, so a dead holder's lock is simply taken over.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 256).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise RunDirError(
                    f"{path.parent}: in use by {holder}; wait for it to finish or stop it"
                ) from None
        self.previous = os.read(fd, 256).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} since {stamp}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
