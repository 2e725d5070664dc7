"""Seeded, vectorised generators of synthetic radar scenes, written as dataset files.

=================  ==================  =======  ============================================
name               kind                units    what (see the module of each)
=================  ==================  =======  ============================================
insar_noise        insar_noise         rad      atmosphere + ramp + noise, 32 px (insar.py)
insar_unwrapped    insar_unwrapped     rad      Mogi / Okada / no source + atmosphere, 128 px
insar_wrapped      insar_wrapped       rad      the same wrapped with coherence noise, 128 px
insar_noise_dem    insar_noise         rad      insar_noise with a stratified delay k h over a
                                                fractal DEM; map ``dem`` (m), extra k, 32 px
sar                sar_backscatter     linear   ten TenGeoP-like ocean classes + speckle (sar.py)
sar_map            sar_backscatter     linear   water / land / ship label map and per-label
                                                Gamma, K and point-target backscatter; map
                                                ``land_cover``, 64 px (sar_map.py)
=================  ==================  =======  ============================================

Sample ``i`` of a seed depends only on ``(seed, i)``; files are written in chunks, so memory does
not grow with ``n``. Generator parameters (the dataclasses of each module) can be overridden
with ``params={"looks": 8, "atmosphere.beta": 2.0}``; the resolved parameters are stored in the
file attribute ``synth_params`` (JSON).

A generator may write per-pixel maps aligned with its images (:mod:`radardiff.data.maps`): the
map-aware ones carry the truth that conditioning is checked against (the DEM a phase follows,
the label map a backscatter follows). Extras are image-shaped ``(1, H, W)`` unless a generator
gives their own shape (the per-scene coefficient of ``insar_noise_dem`` is one number each).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radardiff._budget import Pace, check_space
from radardiff.config.io import set_dotted
from radardiff.data.dataset_file import DatasetWriter, check_dataset_path
from radardiff.data.maps import MapChannel
from radardiff.data.synth.elastic import los_phase, mogi, okada85
from radardiff.data.synth.fields import BLOCK, powerlaw_field, spectral_slope
from radardiff.data.synth.insar import (
    SOURCE_CLASSES,
    DeformationParams,
    DemNoiseParams,
    InsarNoiseParams,
    WrappedParams,
    insar_noise,
    insar_noise_dem,
    insar_unwrapped,
    insar_wrapped,
)
from radardiff.data.synth.sar import SAR_CLASSES, SarParams, sar_scenes
from radardiff.data.synth.sar_map import LAND_COVER, SarMapParams, sar_map
from radardiff.errors import ConfigError, DataError


def _chunk(size: int) -> int:
    """Samples generated and written at a time: about 64 MiB of float32 per array."""
    return max(BLOCK, (2**24 // (size * size)) // BLOCK * BLOCK)


@dataclass
class SynthResult:
    """A chunk of generated scenes, ready for :class:`DatasetWriter.append`."""

    images: np.ndarray
    labels: np.ndarray | None = None
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    maps: np.ndarray | None = None  # (n, M, H, W), the channels of SynthKind.maps


@dataclass(frozen=True)
class SynthKind:
    """A registered generator: dataset kind, units, default size, parameters, chunk function.

    ``extras``: the names of its extras, each image-shaped ``(1, size, size)``, or a pair
    ``(name, shape)`` for another per-sample shape (``()``: one number per sample); float32.
    ``maps``: its map channels (none by default).
    """

    name: str
    kind: str
    default_size: int
    params_type: type
    generate: Callable[[int, int, int, Any, int], SynthResult]  # (n, size, seed, params, start)
    units: Callable[[Any], str]
    class_names: list[str] | None = None
    extras: Callable[[Any], tuple[str | tuple[str, tuple[int, ...]], ...]] = lambda p: ()
    pixel_spacing_m: Callable[[Any, int], float | None] = lambda p, size: None
    # the parameter that a requested pixel spacing sets (the scene's extent, spacing * size);
    # None: the generator is scale free and the spacing is only recorded
    extent_param: str | None = None
    maps: Callable[[Any], tuple[MapChannel, ...]] = lambda p: ()


def _noise(n, size, seed, p, start) -> SynthResult:
    return SynthResult(images=insar_noise(n, size, seed, p, start))


def _unwrapped(n, size, seed, p, start) -> SynthResult:
    s = insar_unwrapped(n, size, seed, p, start)
    return SynthResult(s.images, s.labels, {"deformation": s.deformation})


def _wrapped(n, size, seed, p, start) -> SynthResult:
    s = insar_wrapped(n, size, seed, p, start)
    return SynthResult(s.images, s.labels, {"unwrapped": s.unwrapped, "coherence": s.coherence})


def _sar(n, size, seed, p, start) -> SynthResult:
    s = sar_scenes(n, size, seed, p, start)
    return SynthResult(s.images, s.labels, {"clean": s.clean} if p.store_clean else {})


def _noise_dem(n, size, seed, p, start) -> SynthResult:
    s = insar_noise_dem(n, size, seed, p, start)
    return SynthResult(s.images, extras={"strat_rad_per_m": s.strat_rad_per_m}, maps=s.dem)


_SAR_MAP_TRUTHS = ("land_texture", "water_db", "land_db")


def _sar_map(n, size, seed, p, start) -> SynthResult:
    s = sar_map(n, size, seed, p, start)
    extras = {k: getattr(s, k) for k in _SAR_MAP_TRUTHS}
    return SynthResult(s.images, extras=extras, maps=s.land_cover)


GENERATORS: dict[str, SynthKind] = {
    "insar_noise": SynthKind(
        "insar_noise",
        "insar_noise",
        32,
        InsarNoiseParams,
        _noise,
        lambda p: "rad",
        pixel_spacing_m=lambda p, size: 100.0,
    ),
    "insar_unwrapped": SynthKind(
        "insar_unwrapped",
        "insar_unwrapped",
        128,
        DeformationParams,
        _unwrapped,
        lambda p: "rad",
        SOURCE_CLASSES,
        lambda p: ("deformation",),
        lambda p, size: p.extent_m / size,
        extent_param="extent_m",
    ),
    "insar_wrapped": SynthKind(
        "insar_wrapped",
        "insar_wrapped",
        128,
        WrappedParams,
        _wrapped,
        lambda p: "rad",
        SOURCE_CLASSES,
        lambda p: ("unwrapped", "coherence"),
        lambda p, size: p.deformation.extent_m / size,
        extent_param="deformation.extent_m",
    ),
    "sar": SynthKind(
        "sar",
        "sar_backscatter",
        128,
        SarParams,
        _sar,
        lambda p: "dB" if p.db else "linear",
        SAR_CLASSES,
        lambda p: ("clean",) if p.store_clean else (),
        lambda p, size: 20_000.0 / size,
    ),
    "insar_noise_dem": SynthKind(
        "insar_noise_dem",
        "insar_noise",
        32,
        DemNoiseParams,
        _noise_dem,
        lambda p: "rad",
        extras=lambda p: (("strat_rad_per_m", ()),),
        pixel_spacing_m=lambda p, size: 100.0,
        maps=lambda p: (MapChannel("dem", "m"),),
    ),
    "sar_map": SynthKind(
        "sar_map",
        "sar_backscatter",
        64,
        SarMapParams,
        _sar_map,
        lambda p: "dB" if p.db else "linear",
        extras=lambda p: tuple((k, ()) for k in _SAR_MAP_TRUTHS),
        # ships of 1-3 px are 20-60 m long on a Sentinel-1 IW GRD-like 20 m grid
        pixel_spacing_m=lambda p, size: 20.0,
        maps=lambda p: (MapChannel("land_cover", classes=LAND_COVER),),
    ),
}


def _extra_specs(gen: SynthKind, p: Any, size: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """The writer's extras ``{name: (per-sample shape, dtype)}`` of generator ``gen``."""
    specs = {}
    for e in gen.extras(p):
        name, shape = (e, (1, size, size)) if isinstance(e, str) else e
        specs[name] = (tuple(shape), "<f4")
    return specs


def _field_names(cls: type, prefix: str = "") -> Iterator[str]:
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(
            f.default_factory if f.default_factory is not dataclasses.MISSING else None
        ):
            yield from _field_names(f.default_factory, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def build_params(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The parameter dataclass of generator ``name`` with ``options`` (dotted keys) applied."""
    gen = _kind(name)
    valid = list(_field_names(gen.params_type))
    nested: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in valid:
            raise ConfigError(
                f"synth {name}: unknown parameter '{key}'; expected one of {', '.join(valid)}"
            )
        set_dotted(nested, key, value)
    return _apply(gen.params_type(), nested, name)


def _apply(obj: Any, changes: dict[str, Any], name: str) -> Any:
    updates = {}
    for key, value in changes.items():
        current = getattr(obj, key)
        if isinstance(value, dict):
            updates[key] = _apply(current, value, name)
        elif isinstance(current, tuple):
            try:
                updates[key] = tuple(float(v) for v in value)
                if not all(math.isfinite(v) for v in updates[key]):
                    raise ValueError(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"synth {name}: parameter '{key}' needs {len(current)} numbers, got {value!r}"
                ) from None
            if len(updates[key]) != len(current):
                raise ConfigError(
                    f"synth {name}: parameter '{key}' needs {len(current)} numbers, got {value!r}"
                )
        else:
            try:
                updates[key] = _convert(current, value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"synth {name}: parameter '{key}' must be {type(current).__name__}, got {value!r}"
                ) from None
    return dataclasses.replace(obj, **updates)


def _convert(current: Any, value: Any) -> Any:
    """``value`` as the type of the default ``current``; booleans also from 'true'/'false'."""
    if isinstance(current, bool):
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool | int) and value in (0, 1):
            return bool(value)
        raise ValueError(value)
    if isinstance(current, int | float) and not math.isfinite(float(value)):
        raise ValueError(value)  # no parameter means NaN or infinity
    if isinstance(current, int) and float(value) != int(float(value)):
        raise ValueError(value)  # 2.5 looks is not 2 looks
    return type(current)(float(value)) if isinstance(current, int) else type(current)(value)


def _kind(name: str) -> SynthKind:
    if name not in GENERATORS:
        raise DataError(f"unknown synthetic kind '{name}'; expected one of {', '.join(GENERATORS)}")
    return GENERATORS[name]


def _with_spacing(gen: SynthKind, params, pixel_spacing_m: float | None, size: int):
    """``params`` with the extent ``pixel_spacing_m`` sets (generators with a physical extent),
    and the spacing to record (scale-free generators; None: the generator's own)."""
    if pixel_spacing_m is None:
        return params, None
    if not (math.isfinite(pixel_spacing_m) and pixel_spacing_m > 0):
        raise DataError(
            f"--pixel-spacing must be a positive number of metres, got {pixel_spacing_m}"
        )
    if gen.extent_param and gen.extent_param in (params or {}):
        raise DataError(
            f"--pixel-spacing and --param {gen.extent_param}: give one (the extent is "
            "spacing x size)"
        )
    if gen.extent_param:
        return {**(params or {}), gen.extent_param: pixel_spacing_m * size}, None
    return params, float(pixel_spacing_m)


def synthesize(
    name: str,
    n: int,
    size: int | None,
    out: str | os.PathLike,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    pixel_spacing_m: float | None = None,
) -> Path:
    """Generate ``n`` scenes of generator ``name`` and write them as a dataset file at ``out``.

    ``size`` None takes the generator's default. ``params`` overrides generator parameters
    (dotted keys, see :func:`build_params`). ``pixel_spacing_m`` sets the scene's extent of
    the generators with a physical one (deformation: the elastic sources are in metres), and is
    recorded as the spacing of the scale-free ones (``insar_noise`` and ``insar_noise_dem``
    100 m, ``sar`` 20 km / size, ``sar_map`` 20 m by default). Map-aware generators write their
    maps beside the images. The file appears only when complete.
    """
    gen = _kind(name)
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    size = gen.default_size if size is None else size
    check_dataset_path(out)
    if size < 8:
        raise DataError(f"--size must be at least 8, got {size}")
    if seed < 0:
        raise DataError(f"--seed must be >= 0, got {seed}")
    params, spacing = _with_spacing(gen, params, pixel_spacing_m, size)
    p = build_params(name, params)
    extras = _extra_specs(gen, p, size)
    maps = gen.maps(p)
    per_sample = (1 + len(maps)) * size * size + sum(math.prod(s) for s, _ in extras.values())
    check_space(out, 4.0 * n * per_sample, f"{n} scenes of {size} px")
    pace = Pace(str(out), n)
    with DatasetWriter(
        out,
        (1, size, size),
        kind=gen.kind,
        units=gen.units(p),
        class_names=gen.class_names,
        with_labels=gen.class_names is not None,
        pixel_spacing_m=spacing or gen.pixel_spacing_m(p, size),
        source=f"radardiff synth {name} seed={seed}",
        extras=extras,
        attrs={"synth_params": json.dumps(dataclasses.asdict(p)), "seed": int(seed)},
        maps=maps,
    ) as writer:
        chunk = _chunk(size)
        for start in range(0, n, chunk):
            res = gen.generate(min(chunk, n - start), size, seed, p, start)
            writer.append(res.images, res.labels, res.maps, **res.extras)
            pace.done(writer.n)
    return Path(out)


__all__ = [
    "GENERATORS",
    "LAND_COVER",
    "SAR_CLASSES",
    "SOURCE_CLASSES",
    "DemNoiseParams",
    "DeformationParams",
    "InsarNoiseParams",
    "SarMapParams",
    "SarParams",
    "SynthKind",
    "SynthResult",
    "WrappedParams",
    "build_params",
    "insar_noise",
    "insar_noise_dem",
    "insar_unwrapped",
    "insar_wrapped",
    "los_phase",
    "mogi",
    "okada85",
    "powerlaw_field",
    "sar_map",
    "sar_scenes",
    "spectral_slope",
    "synthesize",
]
