"""Seeded, vectorised generators of synthetic radar scenes (written as dataset files)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radardiff.data.dataset_file import write_dataset
from radardiff.data.synth.insar import InsarNoiseParams, insar_noise
from radardiff.errors import DataError


@dataclass(frozen=True)
class SynthKind:
    """A registered generator: its dataset kind, units and default size."""

    name: str
    kind: str
    units: str
    default_size: int
    generate: Callable[[int, int, int], "SynthResult"]


@dataclass
class SynthResult:
    images: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    extras: dict[str, np.ndarray] | None = None
    pixel_spacing_m: float | None = None


def _insar_noise(n: int, size: int, seed: int) -> SynthResult:
    return SynthResult(images=insar_noise(n, size, seed), pixel_spacing_m=100.0)


GENERATORS: dict[str, SynthKind] = {
    "insar_noise": SynthKind("insar_noise", "insar_noise", "rad", 32, _insar_noise),
}


def synthesize(name: str, n: int, size: int | None, out: str | os.PathLike, seed: int = 0) -> Path:
    """Generate ``n`` scenes of generator ``name`` and write them as a dataset file."""
    if name not in GENERATORS:
        raise DataError(f"unknown synthetic kind '{name}'; expected one of {', '.join(GENERATORS)}")
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    gen = GENERATORS[name]
    size = size or gen.default_size
    if size < 8:
        raise DataError(f"--size must be at least 8, got {size}")
    res = gen.generate(n, size, seed)
    return write_dataset(
        out, res.images, res.labels, kind=gen.kind, units=gen.units, class_names=res.class_names,
        pixel_spacing_m=res.pixel_spacing_m, source=f"radardiff synth {name} seed={seed}",
        extras=res.extras,
    )


__all__ = ["GENERATORS", "InsarNoiseParams", "SynthKind", "SynthResult", "insar_noise", "synthesize"]
