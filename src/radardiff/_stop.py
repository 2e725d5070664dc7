"""Stop requests (Ctrl-C, SIGTERM) that nothing can swallow.

A Python signal handler that raises ``KeyboardInterrupt`` raises it wherever the interpreter
happens to be. Inside a weakref callback, a ``__del__`` or a Cython ``__dealloc__`` (h5py runs
many while writing) Python prints "Exception ignored" and carries on, so a write loop could finish
and exit 0 after Ctrl-C. The CLI's handlers therefore also *record* the request:
:func:`check` raises it again at the next stop point (every write loop calls it, and every writer
calls it before it moves a file into place), and the CLI's exit status follows the record, not
whether the exception survived. A swallowed stop exception is not printed either.

The library installs nothing: without :func:`install`, :func:`check` never raises.
"""

from __future__ import annotations

import signal
import sys

from radardiff.errors import Terminated

_requested: int | None = None
_default_unraisablehook = sys.unraisablehook


def _exception(signum: int) -> BaseException:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum, frame) -> None:
    global _requested
    if _requested is None:
        _requested = signum
    raise _exception(signum)


def _unraisable(unraisable) -> None:
    # a stop exception that a callback swallowed: it is recorded and raised again at the next
    # stop point, so its "Exception ignored" report would only be noise on stderr
    if _requested is not None and isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    _default_unraisablehook(unraisable)


def install() -> None:
    """Handle SIGINT and SIGTERM as recorded stop requests (the CLI calls this once)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    sys.unraisablehook = _unraisable


def requested() -> int | None:
    """The first stop signal received (``signal.SIGINT`` or ``signal.SIGTERM``), or None."""
    return _requested


def check() -> None:
    """Raise the recorded stop request (``KeyboardInterrupt``, or :class:`Terminated` for
    SIGTERM), if any: call it in every loop that writes, and before moving a file into place."""
    if _requested is not None:
        raise _exception(_requested)


def reset() -> None:
    """Forget a recorded request (tests; a process that goes on after handling one)."""
    global _requested
    _requested = None
