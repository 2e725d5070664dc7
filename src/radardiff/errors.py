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
