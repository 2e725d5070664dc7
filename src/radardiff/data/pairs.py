"""Labelled training pairs: a noise source plus known elastic deformation, in physical units.

A pair is ``input = noise + signal`` (optionally wrapped, with coherence-dependent phase noise)
and its exact label: the deformation field, a present/absent label, or the unwrapped phase.

- *noise*: tiles of a dataset file (real interferograms, a radardiff run's samples, the physics
  generator's output), any number of them mixed in equal shares (:class:`NoiseSource`);
- *signal*: the line-of-sight displacement of a Mogi point source or an Okada dislocation
  (:mod:`radardiff.data.synth.elastic`), centred in the middle of the tile, rescaled so that its
  peak ``|LOS|`` is log-uniform in ``peak_los_m`` (the displacement is linear in the volume
  change and the slip, so this is the same as drawing those), converted to the noise's units:
  ``phi = -4 pi / lambda * d_LOS`` for radians, ``d_LOS`` for metres, cm, mm;
- *reference*: an unwrapped interferogram's zero is arbitrary, so unwrapped inputs and
  deformation labels are referenced to their mean over the input's valid pixels (the label is
  what a network can recover: the deformation up to a constant);
- *labels*: ``deformation`` (field, the noise's units), ``presence`` (1 where the source's peak
  ``|LOS|`` is at least ``threshold_m``; sources below it are hard negatives) and
  ``unwrapped`` (the wrapped input's noise-free unwrapped phase, not referenced: it is
  congruent with the input).

Pair ``i`` depends only on ``(seed, i)`` and the noise source: its signal comes from the random
stream ``default_rng([seed, i // 256, 1])`` and its noise tile from one fixed permutation of each
source (every tile is used once before any is used again).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radardiff._budget import Pace, check_space
from radardiff.data.dataset_file import DatasetFile
from radardiff.data.synth.elastic import C_BAND_WAVELENGTH_M
from radardiff.data.synth.insar import (
    DeformationParams,
    _deformation,
    coherence_fields,
    correlated_phase_noise,
    wrap,
)
from radardiff.errors import DataError

LABELS = ("deformation", "presence", "unwrapped")
SOURCES = ("mogi", "okada", "mix")
PRESENCE_CLASSES = ["absent", "present"]
BLOCK = 256
# metres of LOS displacement per unit of the noise; radians are handled with the wavelength
_LENGTH_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
_RADIANS = ("rad", "radian", "radians")
# geometry defaults of the deformation generator, for its 12.8 km scene: scaled to the tile
_SCALED = ("mogi_depth_m", "length_m", "width_m", "top_depth_m")


def units_factor(units: str, wavelength_m: float) -> float:
    """Noise units per metre of LOS displacement (``-4 pi / lambda`` for radians of phase)."""
    u = units.strip().lower()
    if u in _RADIANS:
        return -4.0 * math.pi / wavelength_m
    if u in _LENGTH_UNITS:
        return 1.0 / _LENGTH_UNITS[u]
    raise DataError(
        f"units '{units}' cannot carry a line-of-sight deformation signal; expected rad, m, cm "
        "or mm"
    )


@dataclass(frozen=True)
class PairParams:
    """What a pair holds (see the module docstring).

    ``present``: fraction of pairs that get a source (default 1 for field labels, 0.5 for
    ``presence``). ``coherence``: range of the per-tile mean coherence of the decorrelation
    phase noise added before wrapping (None: none), ``looks`` its number of looks.
    ``geometry``: the deformation generator's parameters (incidence, heading, source shapes);
    its lengths default to those of ``data synth insar_unwrapped`` scaled to the tile's extent.
    """

    label: str = "deformation"
    source: str = "mogi"
    present: float | None = None
    peak_los_m: tuple[float, float] = (0.005, 0.05)
    threshold_m: float = 0.01
    wavelength_m: float = C_BAND_WAVELENGTH_M
    wrap: bool = False
    coherence: tuple[float, float] | None = None
    coherence_std: float = 0.1
    looks: int = 4
    augment: bool = True
    geometry: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("peak_los_m", "threshold_m", "wavelength_m", "present", "coherence",
                    "coherence_std"):  # fmt: skip
            value = getattr(self, key)
            values = value if isinstance(value, tuple) else (value,)
            _check(all(v is None or math.isfinite(v) for v in values), key, "finite", value)
        _check(self.label in LABELS, "label", f"one of {', '.join(LABELS)}", self.label)
        _check(self.source in SOURCES, "source", f"one of {', '.join(SOURCES)}", self.source)
        lo, hi = self.peak_los_m
        _check(0 < lo <= hi, "peak_los_m", "an increasing pair of positive metres", (lo, hi))
        _check(self.threshold_m > 0, "threshold_m", "> 0 metres", self.threshold_m)
        _check(self.wavelength_m > 0, "wavelength_m", "> 0 metres", self.wavelength_m)
        if self.present is not None:
            _check(0 <= self.present <= 1, "present", "a fraction in [0, 1]", self.present)
        if self.coherence is not None:
            c0, c1 = self.coherence
            _check(0 <= c0 <= c1 < 1, "coherence", "a pair 0 <= lo <= hi < 1", self.coherence)
            if not self.wrap:
                raise DataError("pairs: coherence noise is added before wrapping; add --wrap")
        _check(1 <= self.looks <= 100, "looks", "in 1-100", self.looks)
        if self.label == "unwrapped" and not self.wrap:
            raise DataError("pairs: label 'unwrapped' is the truth of wrapped inputs; add --wrap")

    @property
    def present_fraction(self) -> float:
        if self.present is not None:
            return self.present
        return 0.5 if self.label == "presence" else 1.0


def _check(ok: bool, key: str, what: str, value: object) -> None:
    if not ok:
        raise DataError(f"pairs: '{key}' must be {what}, got {value!r}")


def deformation_params(p: PairParams, size: int, spacing_m: float) -> DeformationParams:
    """The generator's parameters for a tile of ``size`` pixels of ``spacing_m`` metres."""
    extent = size * spacing_m
    base = DeformationParams()
    scale = extent / base.extent_m
    values = {k: tuple(v * scale for v in getattr(base, k)) for k in _SCALED}
    values.update(p.geometry)
    try:
        return dataclasses.replace(
            base, extent_m=extent, wavelength_m=p.wavelength_m, center_fraction=0.5, **values
        )
    except TypeError as err:
        raise DataError(f"pairs: bad geometry parameter ({err})") from None


@dataclass
class Signals:
    """Signals of ``n`` pairs: LOS displacement (n, H, W) in metres, and what made them."""

    los_m: np.ndarray
    source: np.ndarray  # int8: 0 Mogi, 1 Okada, -1 none
    peak_m: np.ndarray  # float32: drawn peak |LOS| (0 without a source)


def draw_signals(n: int, size: int, spacing_m: float, rng, p: PairParams) -> Signals:
    """Elastic sources rescaled to a log-uniform peak |LOS| (module docstring)."""
    g = deformation_params(p, size, spacing_m)
    kind = {"mogi": np.zeros(n, np.int64), "okada": np.ones(n, np.int64)}.get(
        p.source, rng.integers(0, 2, n)
    )
    has = rng.random(n) < p.present_fraction
    lo, hi = np.log(p.peak_los_m)
    peak = np.exp(rng.uniform(lo, hi, n))
    phase = _deformation(np.where(has, kind, 2), size, rng, g)
    # phase = -4 pi / lambda * d_LOS: back to metres, then scaled to the drawn peak
    los = phase * (-g.wavelength_m / (4.0 * np.pi))
    top = np.abs(los).reshape(n, -1).max(axis=1)
    scale = np.where(has & (top > 0), peak / np.maximum(top, 1e-30), 0.0)
    return Signals(
        los_m=(los * scale[:, None, None]).astype(np.float32),
        source=np.where(has, kind, -1).astype(np.int8),
        peak_m=np.where(has, peak, 0.0).astype(np.float32),
    )


class NoiseSource:
    """Noise tiles from dataset files, mixed in equal shares; one channel, square tiles.

    ``spacing_m`` overrides (or supplies) the files' pixel spacing; files of different units,
    kinds, sizes or spacings are refused.
    """

    def __init__(self, files: Sequence[DatasetFile], spacing_m: float | None = None) -> None:
        if not files:
            raise DataError("pairs: no noise source given")
        first = files[0].info
        for f in files:
            i = f.info
            if i.n == 0:
                raise DataError(f"{i.path}: no noise tiles")
            if i.channels != 1 or i.height != i.width:
                raise DataError(
                    f"{i.path}: noise tiles must be one square channel, got (C, H, W) = {i.shape}"
                )
            if i.shape != first.shape:
                raise DataError(
                    f"{i.path}: tiles {i.shape} differ from {first.path}'s {first.shape}"
                )
            if i.units.strip().lower() != first.units.strip().lower():
                raise DataError(
                    f"{i.path}: units '{i.units}' differ from {first.path}'s '{first.units}'"
                )
            if (i.kind == "insar_wrapped") != (first.kind == "insar_wrapped"):
                raise DataError(f"{i.path}: wrapped and unwrapped noise cannot be mixed")
        try:
            units_factor(first.units, C_BAND_WAVELENGTH_M)
        except DataError as err:
            raise DataError(f"{first.path}: {err}") from None
        self.files = list(files)
        self.size = first.height
        self.units = first.units
        self.wrapped = first.kind == "insar_wrapped"
        self.spacing_m = self._spacing(spacing_m)

    def _spacing(self, given: float | None) -> float:
        if given is not None and not (math.isfinite(given) and given > 0):
            raise DataError(f"--pixel-spacing must be a positive number of metres, got {given}")
        for f in self.files:
            s = f.info.pixel_spacing_m
            if s is None:
                continue
            if given is None:
                given = s
            elif abs(s - given) > 0.01 * given:
                raise DataError(
                    f"{f.path}: pixel spacing {s:g} m differs from {given:g} m; the signal would "
                    "have the wrong size"
                )
        if given is None:
            raise DataError(
                f"{self.files[0].path}: no pixel spacing recorded; give --pixel-spacing (metres)"
            )
        return float(given)

    def source_of(self, index: np.ndarray) -> np.ndarray:
        """Which file each pair's noise tile comes from (files take turns)."""
        return np.asarray(index) % len(self.files)

    def tiles(self, seed: int, index: np.ndarray) -> np.ndarray:
        """Noise tiles (k, H, W) float64 of pairs ``index`` (module docstring's assignment)."""
        k = len(self.files)
        out = np.empty((index.size, self.size, self.size))
        for s, f in enumerate(self.files):
            sel = np.flatnonzero(index % k == s)
            if sel.size == 0:
                continue
            order = np.random.default_rng([seed, 2, s]).permutation(f.info.n)
            rows = order[(index[sel] // k) % f.info.n]
            uniq, inv = np.unique(rows, return_inverse=True)
            tiles = f.images(uniq)[:, 0]
            empty = ~np.isfinite(tiles).reshape(len(tiles), -1).any(axis=1)
            if empty.any():
                raise DataError(f"{f.path}: tile {uniq[empty][0]} has no valid pixel (all NaN)")
            out[sel] = tiles[inv]
        return out


def dihedral(x: np.ndarray, ops: np.ndarray) -> np.ndarray:
    """Each (H, W) image of ``x`` turned by ``ops % 4`` quarter turns, flipped where ``ops >= 4``."""
    out = np.empty_like(x)
    for i, op in enumerate(ops):
        y = np.rot90(x[i], int(op) % 4)
        out[i] = y[:, ::-1] if op >= 4 else y
    return out


def valid_mean(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean of each (H, W) image over its valid pixels (0 when none), shape (k, 1, 1)."""
    v = valid.reshape(len(x), -1)
    s = np.where(v, x.reshape(len(x), -1), 0.0).sum(axis=1)
    return (s / np.maximum(v.sum(axis=1), 1))[:, None, None]


@dataclass
class PairBlock:
    """One block of pairs; arrays (k, 1, H, W) float32 unless noted."""

    index: np.ndarray
    inputs: np.ndarray
    labels: np.ndarray | None  # int64 (k,), presence only
    extras: dict[str, np.ndarray]


def make_pairs(
    noise: NoiseSource,
    n: int,
    seed: int,
    p: PairParams,
    masks: DatasetFile | None = None,
) -> Iterator[PairBlock]:
    """Pairs ``0 .. n-1`` in blocks of 256 (module docstring).

    ``masks``: a dataset file whose tiles' no-data patterns are given to the noise tiles of other
    files that have none (e.g. synthetic or generated noise), so that networks see the holes of
    real data; tiles of the mask file itself are left as they are.
    """
    _check_compatible(noise, p, masks)
    factor = units_factor(noise.units, p.wavelength_m)
    for first in range(0, n, BLOCK):
        index = np.arange(first, min(first + BLOCK, n))
        rng = np.random.default_rng([seed, first // BLOCK, 1])
        yield _block(noise, index, rng, p, factor, masks, seed)


def _check_compatible(noise: NoiseSource, p: PairParams, masks: DatasetFile | None) -> None:
    if noise.wrapped:
        if not p.wrap:
            raise DataError(
                f"{noise.files[0].path}: wrapped noise makes wrapped inputs only; add --wrap"
            )
        if p.label == "unwrapped":
            raise DataError(
                f"{noise.files[0].path}: wrapped noise has no unwrapped truth; label "
                "'unwrapped' needs unwrapped noise"
            )
    if p.wrap and noise.units.strip().lower() not in _RADIANS:
        raise DataError(
            f"{noise.files[0].path}: units '{noise.units}' cannot be wrapped; wrapping needs "
            "phase in radians"
        )
    if masks is not None and masks.info.shape[1:] != (noise.size, noise.size):
        raise DataError(
            f"{masks.path}: mask tiles {masks.info.shape[1:]} differ from the noise tiles "
            f"{(noise.size, noise.size)}"
        )


def _block(noise, index, rng, p: PairParams, factor, masks, seed) -> PairBlock:
    k, size = index.size, noise.size
    sig = draw_signals(k, size, noise.spacing_m, rng, p)
    ops = rng.integers(0, 8 if p.augment else 1, k)
    base = dihedral(noise.tiles(seed, index), ops)
    if masks is not None:
        rows = rng.integers(0, masks.info.n, k)
        uniq, inv = np.unique(rows, return_inverse=True)
        holes = ~np.isfinite(masks.images(uniq)[inv, 0])
        holes = dihedral(holes, rng.integers(0, 8, k))
        clean = np.isfinite(base).reshape(k, -1).all(axis=1)
        # the mask file's own tiles keep their holes as they are (a clean real tile stays clean)
        same = Path(masks.path).resolve()
        other = np.array(
            [Path(noise.files[s].path).resolve() != same for s in noise.source_of(index)]
        )
        base[holes & (clean & other)[:, None, None]] = np.nan
    valid = np.isfinite(base)
    signal = sig.los_m.astype(np.float64) * factor
    total = base + signal
    extras: dict[str, np.ndarray] = {}
    if p.wrap:
        phase = total
        if p.coherence is not None:
            gamma = coherence_fields(k, size, rng, p.coherence, p.coherence_std)
            phase = total + correlated_phase_noise(gamma, p.looks, rng)
            extras["coherence"] = gamma[:, None].astype(np.float32)
        inputs = np.where(valid, wrap(phase), np.nan)
        if p.label == "unwrapped":
            extras["unwrapped"] = np.where(valid, total, np.nan)[:, None].astype(np.float32)
    else:
        inputs = total - valid_mean(total, valid)
    extras["deformation"] = (signal - valid_mean(signal, valid))[:, None].astype(np.float32)
    extras["peak_los_m"] = sig.peak_m
    extras["source_type"] = sig.source
    labels = (sig.peak_m >= p.threshold_m).astype(np.int64) if p.label == "presence" else None
    return PairBlock(index, inputs[:, None].astype(np.float32), labels, extras)


def extras_layout(p: PairParams, size: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """The per-pair datasets of a pairs file: name -> (shape after N, dtype)."""
    field_ = ((1, size, size), "<f4")
    out = {"deformation": field_, "peak_los_m": ((), "<f4"), "source_type": ((), "i1")}
    if p.wrap and p.coherence is not None:
        out["coherence"] = field_
    if p.label == "unwrapped":
        out["unwrapped"] = field_
    return out


def _made(path) -> str:
    st = Path(path).stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def write_pairs(
    noise: NoiseSource,
    n: int,
    out,
    seed: int = 0,
    p: PairParams | None = None,
    masks: DatasetFile | None = None,
    on_progress=None,
):
    """Write ``n`` pairs to the dataset file ``out`` (it appears only when complete).

    ``images`` holds the inputs (kind ``insar_wrapped`` when wrapped, else
    ``insar_unwrapped``; the noise's units), ``labels`` the presence labels (``presence``
    only), and the extras of :func:`extras_layout`; the attribute ``pairs`` records the
    parameters, the noise files, the seed and the label.
    """
    from radardiff.data.dataset_file import DatasetWriter, check_dataset_path

    p = p or PairParams()
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    check_dataset_path(out)
    _check_compatible(noise, p, masks)
    record = {
        "params": dataclasses.asdict(p),
        "label": p.label,
        "noise": [str(f.path) for f in noise.files],
        "noise_made": [_made(f.path) for f in noise.files],  # tells remade noise files apart
        "noise_units": noise.units,
        "masks": str(masks.path) if masks is not None else None,
        "seed": int(seed),
        "pixel_spacing_m": noise.spacing_m,
        "units_per_m": units_factor(noise.units, p.wavelength_m),
    }
    fields = 1 + sum(len(shape) == 3 for shape, _ in extras_layout(p, noise.size).values())
    check_space(out, 4.0 * n * fields * noise.size**2, f"{n} pairs of {noise.size} px")
    pace = Pace(str(out), n)
    with DatasetWriter(
        out,
        (1, noise.size, noise.size),
        kind="insar_wrapped" if p.wrap else "insar_unwrapped",
        units=noise.units,
        class_names=PRESENCE_CLASSES if p.label == "presence" else None,
        with_labels=p.label == "presence",
        pixel_spacing_m=noise.spacing_m,
        source=f"radardiff downstream pairs ({p.label}) seed={seed}",
        extras=extras_layout(p, noise.size),
        attrs={"pairs": record},
    ) as writer:
        for block in make_pairs(noise, n, seed, p, masks):
            _refuse_empty_pairs(block, p)
            writer.append(block.inputs, block.labels, **block.extras)
            pace.done(writer.n)
            if on_progress is not None:
                on_progress(block.index.size)
    return writer.path


def _refuse_empty_pairs(block: PairBlock, p: PairParams) -> None:
    """A pair whose input or label field holds no finite value at all teaches nothing and means
    a broken source or option: refused, naming the pairs, instead of written."""
    fields = {"input": block.inputs, "deformation": block.extras["deformation"]}
    if "unwrapped" in block.extras:
        fields["unwrapped"] = block.extras["unwrapped"]
    for name, arr in fields.items():
        empty = ~np.isfinite(arr).reshape(len(arr), -1).any(axis=1)
        if empty.any():
            first = int(block.index[empty][0])
            raise DataError(
                f"pairs: {int(empty.sum())} pair(s) (first: {first}) have no finite value in "
                f"their {name} (label '{p.label}'); check the noise files and the options"
            )
