"""Shared CLI helpers: logging set-up, progress bars, list options."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable

import click

from radardiff._hardware import PRECISIONS


def setup_logging(verbosity: int) -> None:
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("radardiff: %(message)s"))
    root = logging.getLogger("radardiff")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def progress(total: int, desc: str, unit: str = "it", enabled: bool = True):
    """A tqdm bar on stderr with rate and ETA (silent on ranks other than 0 and under -q)."""
    from tqdm import tqdm

    quiet = logging.getLogger("radardiff").getEffectiveLevel() > logging.INFO

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        dynamic_ncols=True,
        leave=True,
        disable=quiet or not (enabled and is_main_process()),
        file=sys.stderr,
    )


def bar_callback(bar) -> Callable[..., None]:
    """Adapt a tqdm bar to the library's ``on_progress(done, total, ...)`` callbacks."""

    def update(done: int, total: int, info: dict | None = None) -> None:
        bar.total = total
        bar.update(done - bar.n)
        if info:
            bar.set_postfix({k: f"{v:.4g}" for k, v in info.items()}, refresh=False)

    return update


class FiniteFloat(click.FloatRange):
    """A float option that must be finite (NaN and infinity are never meant), within the range
    given as for ``click.FloatRange``."""

    name = "number"

    def _describe_range(self) -> str:
        # click writes "[x<=None]" for a range without bounds; say nothing instead
        if self.min is None and self.max is None:
            return ""
        return super()._describe_range()

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


# seeds of numpy's and torch's generators are non-negative
SEED = click.IntRange(min=0)


class BatchSize(click.ParamType):
    """A positive integer, or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            self.fail(f"expected a positive integer or 'auto', got '{value}'", param, ctx)
        return n


def parse_int_list(value: str | None, option: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, got '{value}'", param_hint=option
        ) from None


def parse_kv(items: tuple[str, ...], option: str) -> dict:
    """``k=v`` pairs with TOML-typed values (``solver_order=3``, ``use_karras_sigmas=true``)."""
    import tomllib

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got '{item}'", param_hint=option)
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw.strip()
    return out


def conv_kernels_option():
    """``--conv-kernels`` (default ``auto``): whose 3x3 and 1x1 convolutions the network runs."""
    return click.option(
        "--conv-kernels",
        type=click.Choice(["auto", "radardiff", "torch"]),
        default="auto",
        show_default=True,
        help="The network's 3x3 and 1x1 convolutions and group norms: radardiff's AVX2 kernels "
        "(Winograd for 3x3; group norm fused with its SiLU; auto: on a CPU in fp32 without "
        "--compile, where a C compiler builds them; radardiff: insist) or torch's.",
    )


def precision_option(choices: tuple[str, ...] = PRECISIONS, subject: str = "the network"):
    """``--precision`` (default ``no``): autocast of ``subject``, one of ``choices``."""
    names = {"no": "no (fp32)", "fp16": "fp16 (GPU)"}
    listed = ", ".join(names.get(c, c) for c in choices if c != "auto")
    return click.option(
        "--precision",
        type=click.Choice(list(choices)),
        default="no",
        show_default=True,
        help=f"Autocast of {subject}: {listed}, auto (bf16 where the device computes it fast: a "
        "GPU with bf16, a CPU with AVX-512 bf16 kernels; else fp32).",
    )
