"""Errors shared by every layer.

A :class:`RadarDiffError` carries a one-line message that names the file or option at fault and
what is wrong with it; the CLI prints it as is and exits with status 1.
"""


class RadarDiffError(Exception):
    """A failure caused by the user's input (a file, an option, a run directory)."""


class ConfigError(RadarDiffError):
    """An invalid configuration value, key or file."""


class DataError(RadarDiffError):
    """An unreadable, malformed or unsuitable data file."""


class RunDirError(RadarDiffError):
    """A run directory that is missing, incomplete or inconsistent."""


class DiskFullError(RadarDiffError):
    """A write that ran out of space; the message names the file."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (schedulers, ``timeout``): handled like Ctrl-C, so writes in progress are
    finished or abandoned cleanly, then the command exits with 143."""


_DISK_FULL_TEXT = ("No space left on device", "unexpected pos", "StorageFull", "code: 28")


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk is full: ENOSPC, or the messages torch.save ('unexpected
    pos') and safetensors ('StorageFull') give for it."""
    import errno

    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    return any(text in str(err) for text in _DISK_FULL_TEXT)
