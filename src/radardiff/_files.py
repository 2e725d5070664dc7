"""Temporary files for atomic writes that end with the permissions of a normal file.

``tempfile.mkstemp`` / ``mkdtemp`` create mode 0600 / 0700 (private, as temporary files must be);
renamed into place, such a file would keep that mode and a colleague in the same group could not
read a config, a metrics file or a feature extractor. These helpers give the temporary file the
mode that ``open()`` would give a new file under the process's umask.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


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
    temporary folder is removed and ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_for(path)
    try:
        write(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
