"""Temporary files for atomic writes that end with the permissions of a normal file.

``tempfile.mkstemp`` / ``mkdtemp`` create mode 0600 / 0700 (private, as temporary files must be);
renamed into place, such a file would keep that mode and a colleague in the same group could not
read a config, a metrics file or a feature extractor. These helpers give the temporary file the
mode that ``open()`` would give a new file under the process's umask.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from radardiff import _stop
from radardiff.errors import RadarDiffError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; outputs are not protected there
    fcntl = None


def umask_mode(directory: bool = False) -> int:
    """The mode a new file (0666) or directory (0777) gets under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def temp_file_for(path: Path) -> tuple[int, str]:
    """``mkstemp`` beside ``path`` (same file system, so ``os.replace`` is atomic), with the
    permissions of a normal new file: (open descriptor, name)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, umask_mode())
    return fd, tmp


def temp_dir_for(path: Path) -> Path:
    """``mkdtemp`` beside ``path``, with the permissions of a normal new directory."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(umask_mode(directory=True))
    return tmp


def replace_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Make the folder ``path`` whole or not at all: ``write(tmp)`` fills a temporary sibling,
    which then replaces ``path`` (an existing one is removed first); on any failure the
    temporary folder is removed and ``path`` is left as it was. ``path`` is held
    (:func:`hold_output`) meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with hold_output(path):
        tmp = temp_dir_for(path)
        try:
            write(tmp)
            _stop.check()
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


class OutputBusy(RadarDiffError):
    """Another process is writing the same output."""


# outputs this process holds: resolved path -> [descriptor, lock file, depth]
_held: dict[str, list] = {}


def lock_path(path: Path) -> Path:
    """The lock file of the output ``path``: ``.NAME.lock`` beside it."""
    return path.with_name(f".{path.name}.lock")


def _key(path: Path) -> str:
    return str(Path(os.path.abspath(path)))


def _acquire(path: Path) -> tuple[int, Path]:
    """Open and flock the lock file of ``path``; OutputBusy naming the holder when it is held."""
    lock = lock_path(path)
    fd = _lock_file(lock, wait_s=0.0)
    if fd is None:
        raise OutputBusy(
            f"{path}: being written by {_holder(lock)}; wait for it to finish or choose another "
            "output"
        )
    return fd, lock


def _holder(lock: Path) -> str:
    try:
        return lock.read_text(encoding="utf-8", errors="replace").strip() or "another process"
    except OSError:
        return "another process"


def _lock_file(lock: Path, wait_s: float) -> int | None:
    """An open descriptor holding an exclusive flock on the file ``lock`` (created), waiting up
    to ``wait_s`` seconds for another holder; None when it is still held then. The file is
    removed on release (:func:`_unlock_file`), so a file opened just before its holder removed
    it is a dead one: the lock is taken again until the file locked is the one under the name.
    The holder's pid, host and start time are written into it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            _stop.check()
            time.sleep(0.05)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            text = f"process {os.getpid()} on {socket.gethostname()} since {stamp}"
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)
            return fd
        os.close(fd)


def _unlock_file(fd: int, lock: Path) -> None:
    with contextlib.suppress(OSError):
        lock.unlink()
    os.close(fd)


@contextlib.contextmanager
def waiting_lock(lock: Path, wait_s: float, busy: Callable[[str], BaseException]) -> Iterator[None]:
    """Hold the lock file ``lock`` for the block, waiting up to ``wait_s`` seconds for another
    holder (then ``busy(holder)`` is raised); the file is removed at the end. Without advisory
    locks (Windows) the block runs unprotected."""
    if fcntl is None:
        yield
        return
    fd = _lock_file(lock, wait_s)
    if fd is None:
        raise busy(_holder(lock))
    try:
        yield
    finally:
        _unlock_file(fd, lock)


@contextlib.contextmanager
def hold_output(path: str | os.PathLike) -> Iterator[None]:
    """Hold the output ``path`` (a file or a folder) against other processes while it is
    written: a second writer of the same path is refused (:class:`OutputBusy`, one line naming
    the holder's pid) instead of mixing its output in. Re-entrant within a process; the kernel
    drops the lock when its holder dies, however it dies."""
    path = Path(path)
    key = _key(path)
    if fcntl is None or key in _held:
        if key in _held:
            _held[key][2] += 1
        try:
            yield
        finally:
            if key in _held:
                _held[key][2] -= 1
        return
    fd, lock = _acquire(path)
    _held[key] = [fd, lock, 1]
    try:
        yield
    finally:
        entry = _held[key]
        entry[2] -= 1
        if entry[2] == 0:
            del _held[key]
            _unlock_file(fd, lock)


def holding(param: str, where: Callable[[Path], Path] | None = None):
    """Decorator: the call holds (:func:`hold_output`) the output given as its argument
    ``param`` (a file or a folder; ``where(path)`` when the output lies elsewhere, such as a
    run's report folder), if one is given."""

    def wrap(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            target = sig.bind_partial(*args, **kwargs).arguments.get(param)
            if target is None:
                return fn(*args, **kwargs)
            path = Path(target) if where is None else where(Path(target))
            with hold_output(path):
                return fn(*args, **kwargs)

        return call

    return wrap


class OutputHold:
    """:func:`hold_output` as an object with an explicit :meth:`release` (for writers whose
    output is finished by a later call rather than at the end of a block)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._cm = hold_output(path)
        self._cm.__enter__()
        self._open = True

    def release(self) -> None:
        if self._open:
            self._open = False
            self._cm.__exit__(None, None, None)
