"""The ``radardiff`` command: one thin sub-command per verb, one-line errors."""

from __future__ import annotations

import errno
import gc
import os
import signal
import sys

import click

from radardiff import _stop
from radardiff._version import __version__
from radardiff.cli._common import setup_logging
from radardiff.errors import RadarDiffError, Terminated, is_disk_full

EPILOG = """\b
Examples:
  radardiff demo                                   # the whole pipeline on synthetic data
  radardiff --threads 1 demo                       # one torch thread (a busy machine)
  radardiff data synth insar_noise --n 2000 --out data/train.h5
  radardiff train configs/insar_noise_32.toml --out runs/noise --set data.train=data/train.h5
  radardiff sample runs/noise --n 64 --out runs/noise/samples/s.h5 --sampler ddim --steps 50
  radardiff evaluate --real data/val.h5 --fake runs/noise/samples/s.h5 --out runs/noise/eval
  radardiff report runs/noise
  radardiff models                                 # the shipped models
  radardiff sample envisat-noise-32 --n 1000 --out noise.h5
"""


class _Stopped(BaseException):
    """A stop (Ctrl-C, SIGTERM) carried past click, which would print a blank line for it."""


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            raise _Stopped() from err


@click.group(cls=_Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="radardiff")
@click.option("-v", "--verbose", count=True, help="More log output (-v: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    envvar="RADARDIFF_THREADS",
    show_default=True,
    help="Torch CPU threads (also $RADARDIFF_THREADS; 0: torch's default, one per core). On a "
    "machine busy with other jobs fewer threads can be much faster.",
)
def cli(verbose: int, quiet: bool, debug: bool, threads: int) -> None:
    """radardiff: diffusion models for radar satellite imagery (SAR, InSAR)."""
    setup_logging(-1 if quiet else verbose)
    if threads:
        import torch

        torch.set_num_threads(threads)


def _register() -> None:
    from radardiff.cli.data import data
    from radardiff.cli.demo import demo
    from radardiff.cli.distill import distill
    from radardiff.cli.downstream import downstream
    from radardiff.cli.evaluate import evaluate
    from radardiff.cli.features import features
    from radardiff.cli.models import models
    from radardiff.cli.report import report
    from radardiff.cli.sample import sample
    from radardiff.cli.study import study
    from radardiff.cli.train import train

    for cmd in (
        data, train, distill, sample, evaluate, features, study, downstream, report, demo, models,
    ):  # fmt: skip
        cli.add_command(cmd)


_register()


def _fail(message: str, code: int) -> None:
    """One line and the exit code; a recorded stop request (Ctrl-C, SIGTERM) wins over whatever
    error it caused on its way out."""
    signum = _stop.requested()
    if signum is not None:
        message, code = _STOPPED[signum == signal.SIGTERM]
    click.echo(f"radardiff: error: {message}", err=True)
    if signum is not None:
        # stopped: the writes are finished or abandoned by now; leave without the interpreter's
        # teardown, whose final garbage collection of torch's and diffusers' objects takes
        # seconds (docs/reliability.md: the first signal stops)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


_STOPPED = {False: ("interrupted", 130), True: ("terminated (SIGTERM)", 143)}


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors exit 2, input and run errors exit 1, each as one line; Ctrl-C
    exits 130 and SIGTERM 143 after the write in progress is finished or abandoned cleanly,
    even where a callback swallowed the signal's exception (:mod:`radardiff._stop`)."""
    _stop.install()
    args = sys.argv[1:] if argv is None else argv
    try:
        _run(args)
    finally:
        if argv is None:
            # the interpreter's final garbage collection walks every object torch, diffusers
            # and scipy made, which takes seconds at each exit. Nothing left needs it (files are
            # closed by now), so the objects are frozen out of it.
            gc.freeze()


def _run(args: list[str]) -> None:
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="radardiff", standalone_mode=False)
        _stop.check()  # a stop that a callback swallowed still ends the command as a stop
    except click.exceptions.Exit as exc:
        if _stop.requested() is not None:
            _fail("stopped", 130)
        sys.exit(exc.exit_code)
    except Terminated:
        _fail("terminated (SIGTERM)", 143)
    except _Stopped as exc:
        terminated = isinstance(exc.__cause__, Terminated)
        _fail(*_STOPPED[terminated])
    except click.exceptions.Abort as exc:  # click turns KeyboardInterrupt (and SIGTERM) into this
        if isinstance(exc.__cause__, Terminated):
            _fail("terminated (SIGTERM)", 143)
        _fail("interrupted" if isinstance(exc.__cause__, KeyboardInterrupt) else "aborted", 130)
    except click.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
        _fail(f"{where}{exc.format_message()} (see --help)", 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except RadarDiffError as exc:
        if debug and _stop.requested() is None:
            raise
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as exc:
        if debug and _stop.requested() is None:
            raise
        name = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        what = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        _fail(f"{name}{what}", 1)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug and _stop.requested() is None:
            raise
        if is_disk_full(exc):
            _fail(f"disk full ({type(exc).__name__}: {exc})", 1)
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", 1
        )
