"""Evaluate a generated dataset file against a real one and write ``metrics.json``.

:func:`evaluate_files` reads both dataset files (images in physical units, NaN = no data) in
bounded blocks, checks that they are comparable, computes the metrics named in
``EvalConfig.metrics`` and writes ``metrics.json`` and ``arrays.npz`` into the output folder.

Sampling
--------
At most ``max_samples`` images per set are used (the argument, else ``EvalConfig.max_samples``,
2000 by default), chosen uniformly without replacement with ``numpy.random.default_rng(seed)``;
``n`` and ``n_used`` in the JSON say how many the file holds and how many were used. Pixel
values for the histogram and its Wasserstein distance are a uniform random subset of at most
2,000,000 finite pixels per set and channel.

``metrics.json`` schema (``"schema": "radardiff.metrics/1"``)
-------------------------------------------------------------
Every key below is always present; a value is ``null`` when it was not computed (metric not
requested, not applicable, or undefined such as a ratio with no valid lag). Non-finite
numbers are written as ``null``.

.. code-block:: text

    {
      "schema": "radardiff.metrics/1",
      "radardiff_version": str,
      "real": {"path": str, "n": int, "n_used": int, "kind": str, "units": str,
               "shape": [C, H, W], "pixel_spacing_m": float | null},
      "fake": {same keys},
      "settings": {"max_samples": int, "seed": int, "bootstrap": int, "max_lag": int | null,
                   "curve_channel": 0, "histogram_max_pixels": int, "metrics": [str, ...],
                   "feature_extractor": str | null (name and path of the extractor),
                   "likelihood_run": str | null (run directory of bits_per_dim),
                   "mismatch_allowed": [str, ...] (differences of kind or pixel spacing
                       accepted by --allow-mismatch; empty when the sets agree),
                   "histogram_centred": bool (the histogram and histogram_w1 are of values
                       minus each sample's mean: unwrapped phase, whose reference is arbitrary)},
      "scalars": {
        "semivariogram_rel_error": mean over lags of |g_fake - g_real| / g_real (unitless),
        "lag1_ratio":      mean lag-1 semivariance of the fake set / that of the real set (1 is
                           right; below 1 too smooth, above 1 too rough; metric "semivariogram"),
        "noise_fraction":  fraction of fake samples whose lag-1 semivariance exceeds
                           NOISE_FACTOR (3) x the 95th percentile of the real set's: samples that
                           look like pixel-scale noise (the failure of fast samplers on radar data),
        "noise_fraction_real": the same fraction in the real set (what a perfect sampler shows),
        "psd_log_rmse":    RMSE of log10 mean PSDs over frequency bins (decades),
        "histogram_w1":    Wasserstein-1 between pixel values (physical units); for unwrapped
                           phase (kinds insar_unwrapped, insar_noise: an arbitrary reference per
                           interferogram) between values minus each sample's mean,
        "range_w1":        Wasserstein-1 between per-sample ranges max - min (physical units),
        "std_w1":          Wasserstein-1 between per-sample standard deviations (physical units),
        "enl_real", "enl_fake":   median over images of the median 8x8-window ENL (linear
                                  intensity; SAR only, metric "speckle"),
        "cv_real", "cv_fake":     mean over images of the coefficient of variation (SAR only),
        "residue_density_real", "residue_density_fake": mean residues per 2x2 loop
                                  (wrapped / unwrapped phase only, metric "phase"),
        "fid", "kid_mean", "kid_std", "precision", "recall": feature-based metrics, only when
                                  features or an extractor are passed to evaluate_files
                                  (unitless; features from settings.feature_extractor),
        "bits_per_dim":   variational bound of the real set under the run's EMA model, bits per
                          dimension in the network's normalised space, discretised decoder
                          (bin width 2/255; comparable with image papers), only when a likelihood
                          result is passed (``radardiff evaluate --likelihood-run``),
        "bits_per_dim_continuous": the same bound with the continuous Gaussian decoder (the
                          natural bound for continuous radar data; can be negative),
        "bits_per_dim_stderr":     standard error of bits_per_dim over the samples,
        "bits_per_dim_steps":      number of kept timesteps K of the (respaced) bound (T = all),
        "bits_per_dim_n":          number of real samples in the bound,
        "sar_enl_ratio":   median ENL of the fake set's homogeneous windows / the real set's (1 is
                           right; metric "sar", linear intensity, :mod:`.measures.sar`),
        "sar_k2_w1", "sar_k3_w1":  Wasserstein-1 between per-image log-cumulants k2, k3,
        "sar_acf1_error":  |fake - real| lag-1 speckle autocorrelation, mean over x and y,
        "sar_db_w1":       Wasserstein-1 between pixel values in dB (the dark tail included),
        "sar_peak_db_w1":  Wasserstein-1 between per-image brightest pixels in dB,
        "sar_pol_ratio_w1": Wasserstein-1 between VV/VH ratios in dB (two-channel sets),
        "memorisation_ratio": median nearest-training distance of the fake samples / that of the
                           real ones (held out: about 1; copies: near 0; metric "memorisation",
                           :mod:`.measures.memorisation`),
        "near_copy_fraction": share of fake samples nearer the training set than the real ones'
                           5th percentile (about 0.05 without copying),
        "map_slope_w1":    Wasserstein-1 between per-image slopes of channel 0 on a continuous map
                           (a DEM: rad/m), mean over the maps both sets carry (metric "maps",
                           :mod:`.map_relations`), with "map_slope_median_real" and "_fake",
        "map_label_db_error": mean over label-map classes of |level fake - level real| (dB;
                           SAR), "map_label_enl_ratio" (ENL fake / real), "map_label_k2_error"
      },
      "semivariogram": {
        "lags_px": [L floats], "lags_m": [L floats] | null (null when no pixel spacing),
        "ci": str (what the band is, e.g. "95% percentile bootstrap over samples (200 resamples)"),
        "real": {"mean": [L], "low": [L], "high": [L]},   isotropic, squared physical units
        "fake": {"mean": [L], "low": [L], "high": [L]},
        "directional": {"x": {"real": [L], "fake": [L]}, "y": {"real": [L], "fake": [L]}}
                                  mean over samples along x (columns) and y (rows)
      } | null,
      "psd": {"freq_cycles_per_px": [K], "real": {"mean","low","high"}, "fake": {...}} | null,
      "histogram": {"bin_edges": [B+1], "real": [B], "fake": [B], "units": str} | null
                                  (densities on shared edges),
      "ranges": {"real_range": [n_used], "fake_range": [n_used], "real_std": [n_used],
                 "fake_std": [n_used]} | null   (per-sample values, physical units),
      "noise_samples": {"threshold": float (NOISE_FACTOR x p95 of the real lag-1 semivariance,
                        squared physical units, channel 0), "factor": 3, "percentile": 95,
                        "worst_fake": [indices into the fake file, worst first, at most 16],
                        "worst_fake_lag1": [their lag-1 semivariance],
                        "worst_real": [...], "worst_real_lag1": [...]} | null,
      "sar": {"real": SUMMARY, "fake": SUMMARY,
              "by_class": {class name: {"real": SUMMARY, "fake": SUMMARY | null}} | null} | null
             SUMMARY: medians over images, one value per channel, of "enl", "cv", "windows"
             (homogeneous windows found), "k2", "k3", "acf_x", "acf_y" ([3] lags each),
             "peak_db", "peak_contrast_db"; "enl_measurable" (share of images with at least two
             homogeneous windows); "db_quantiles" {"1","5","50","95","99": [per channel]};
             "pol_ratio_db_median" (two channels) | null,
      "memorisation": {"train": str, "n_train": int, "n_train_used": int, "n_fake": int,
                       "n_heldout": int, "fake_median": float, "heldout_median": float,
                       "ratio": float, "near_copy_fraction": float} | null,
      "maps": {"shared": [names], "continuous": {name: {"units", "real": FIT, "fake": FIT,
               "slope_w1"}}, "labels": {name: {"real": {class: LABEL}, "fake": {...}}}} | null
             FIT: "n", "slope_median", "slope_q25", "slope_q75", "r2_median";
             LABEL: "pixels", "samples", "mean_db", "db_mean", "enl", "k2", "k3", "reason"
    }

The lag-1 semivariance of a sample is the mean of its directional semivariances at one pixel
along x and y (``gamma_x[0]``, ``gamma_y[0]``).

Curves in the JSON are those of channel 0 (``settings.curve_channel``); scalars are averaged
over channels. ``arrays.npz`` holds every channel: per-sample curves ``sv_{set}_gamma``,
``sv_{set}_gamma_x``, ``sv_{set}_gamma_y`` (n_used, C, L), ``sv_lags_px``, ``psd_{set}``
(n_used, C, K), ``psd_freq``, ``range_{set}``, ``std_{set}`` (n_used, C), ``hist_edges``,
``hist_{set}`` (C, B), ``enl_{set}``, ``cv_{set}``, ``residue_density_{set}`` and
``phase_grad_{mean_abs,std}_{x,y}_{set}`` and ``lag1_{set}`` (lag-1 semivariance) (n_used, C),
``sar_{key}_{set}`` (n_used, C[, 3]) for the SAR summary's keys, for set in {real, fake}, and
``nn_distance_fake``, ``nn_distance_heldout`` (memorisation), when computed. Images of the SAR
metrics are read as linear intensity: dB values converted, and a set said to be linear whose
values are mostly negative read as dB, with a warning.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radardiff._files import holding, temp_file_for
from radardiff._version import __version__
from radardiff.config import EvalConfig
from radardiff.config.io import atomic_write_text
from radardiff.data import DatasetFile
from radardiff.errors import ConfigError, DataError
from radardiff.evaluate.map_relations import MAP_SCALARS, maps_section
from radardiff.evaluate.measures.bands import Band, mean_band
from radardiff.evaluate.measures.distributions import histograms, sample_spread, w1
from radardiff.evaluate.measures.features import fid, kid, precision_recall
from radardiff.evaluate.measures.memorisation import memorisation
from radardiff.evaluate.measures.radar_stats import (
    phase_stats,
    speckle_stats,
    to_linear_intensity,
    wrap,
)
from radardiff.evaluate.measures.sar import polarisation_ratio_db, sar_stats
from radardiff.evaluate.measures.semivariogram import semivariogram, semivariogram_rel_error
from radardiff.evaluate.measures.spectra import psd_log_rmse, radial_frequencies, radial_psd

log = logging.getLogger(__name__)
SCHEMA = "radardiff.metrics/1"
HISTOGRAM_MAX_PIXELS = 2_000_000
SCALAR_KEYS = (
    "semivariogram_rel_error",
    "lag1_ratio",
    "noise_fraction",
    "noise_fraction_real",
    "psd_log_rmse",
    "histogram_w1",
    "range_w1",
    "std_w1",
    "enl_real",
    "enl_fake",
    "cv_real",
    "cv_fake",
    "residue_density_real",
    "residue_density_fake",
    "fid",
    "kid_mean",
    "kid_std",
    "precision",
    "recall",
    "bits_per_dim",
    "bits_per_dim_continuous",
    "bits_per_dim_stderr",
    "bits_per_dim_steps",
    "bits_per_dim_n",
    "sar_enl_ratio",
    "sar_k2_w1",
    "sar_k3_w1",
    "sar_acf1_error",
    "sar_db_w1",
    "sar_peak_db_w1",
    "sar_pol_ratio_w1",
    "memorisation_ratio",
    "near_copy_fraction",
    *MAP_SCALARS,
)
# A sample is a "noise sample" when its lag-1 semivariance exceeds NOISE_FACTOR times the
# NOISE_PERCENTILE-th percentile of the real set's; the report shows the WORST_SHOWN roughest.
NOISE_FACTOR = 3.0
NOISE_PERCENTILE = 95.0
WORST_SHOWN = 16
# Fewest samples per set for which each statistic (and its band or distribution) is defined.
# kinds whose values have an arbitrary reference per sample (unwrapped phase): their pixel-value
# distribution is compared after removing each sample's mean
CENTRED_KINDS = ("insar_unwrapped", "insar_noise")
MIN_SAMPLES = {"semivariogram": 2, "psd": 2, "histogram": 1, "ranges": 2, "speckle": 1, "phase": 1,
               "sar": 1, "memorisation": 2, "maps": 2}  # fmt: skip
# the largest share of its values below 0 a linear intensity may have (noise around 0 aside):
# more, and the values are dB
DB_NEGATIVE_SHARE = 0.5
# memory for the training images of the memorisation check (standardised float64)
_MEMORISATION_BYTES = 512 << 20
# Budget for one block of images; the padded complex FFTs take ~16x the float32 image bytes.
_BLOCK_BYTES = 32 << 20


@dataclass
class _SetStats:
    """Per-sample statistics of one set, accumulated block by block."""

    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, key: str, value: np.ndarray) -> None:
        self.parts.setdefault(key, []).append(np.asarray(value))

    def get(self, key: str) -> np.ndarray:
        return np.concatenate(self.parts[key], axis=0)

    def extend(self, block: dict[str, np.ndarray]) -> None:
        for key, value in block.items():
            self.add(key, value)


@dataclass
class _Plan:
    """What one evaluation measures, on which samples of each set, with which generator."""

    metrics: tuple[str, ...]
    cap: int
    seed: int
    rng: np.random.Generator
    idx: dict[str, np.ndarray]  # "real" / "fake": indices of the samples used, sorted
    spacing: float | None
    mismatch: list[str]
    centre: bool
    units: dict[str, str] = field(default_factory=dict)  # how each set's values are read


def _check_comparable(
    real: DatasetFile, fake: DatasetFile, allow_mismatch: bool = False
) -> tuple[float | None, list[str]]:
    """The pixel spacing the lags are reported in (the real set's when both have one) and the
    differences of kind and pixel spacing accepted by ``allow_mismatch`` (else refused); shapes
    and units must always agree."""
    r, f = real.info, fake.info
    where = f"{r.path} vs {f.path}"
    if r.shape != f.shape:
        raise DataError(f"{where}: image shapes differ, (C, H, W) {r.shape} vs {f.shape}")
    if r.units != f.units:
        raise DataError(f"{where}: units differ, '{r.units}' vs '{f.units}'")
    differ = []  # what differs, as recorded
    if r.kind != f.kind:
        differ.append(f"kinds differ, '{r.kind}' vs '{f.kind}'")
    if (
        r.pixel_spacing_m is not None
        and f.pixel_spacing_m is not None
        and not math.isclose(r.pixel_spacing_m, f.pixel_spacing_m, rel_tol=1e-6)
    ):
        differ.append(
            f"pixel spacings differ, {r.pixel_spacing_m} m vs {f.pixel_spacing_m} m "
            "(lags in the real set's metres)"
        )
    if differ and not allow_mismatch:
        raise DataError(f"{where}: {differ[0]}; --allow-mismatch compares them anyway")
    spacing = r.pixel_spacing_m if r.pixel_spacing_m is not None else f.pixel_spacing_m
    return spacing, differ


def _check_metrics(metrics: tuple[str, ...], ds: DatasetFile, n_used: int) -> None:
    kind = ds.info.kind
    for name in metrics:
        if n_used < MIN_SAMPLES[name]:
            raise DataError(
                f"{ds.path}: metric '{name}' needs at least {MIN_SAMPLES[name]} samples, "
                f"got {n_used} (the file holds {ds.info.n})"
            )
        if name in ("speckle", "sar") and kind != "sar_backscatter":
            raise DataError(
                f"{ds.path}: metric '{name}' needs SAR intensity (kind sar_backscatter, linear "
                f"or dB), got kind '{kind}'"
            )
        if name == "phase" and kind not in ("insar_wrapped", "insar_unwrapped"):
            raise DataError(
                f"{ds.path}: metric 'phase' needs kind insar_wrapped or insar_unwrapped, "
                f"got '{kind}'"
            )


def _per_channel(fn, x: np.ndarray) -> dict[str, np.ndarray]:
    """Apply ``fn`` (B, H, W) -> dataclass of (B, ...) arrays to each channel; stack on axis 1."""
    outs = [fn(x[:, c]) for c in range(x.shape[1])]
    keys = [k for k, v in vars(outs[0]).items() if isinstance(v, np.ndarray) and v.ndim >= 1]
    return {k: np.stack([getattr(o, k) for o in outs], axis=1) for k in keys}


def _pixel_subset(x: np.ndarray, per_image: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Up to ``per_image`` random finite pixels of each image, pooled per channel."""
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    out = []
    for ch in range(c):
        vals = []
        for i in range(b):
            v = flat[i, ch][np.isfinite(flat[i, ch])]
            if v.size > per_image:
                v = rng.choice(v, per_image, replace=False)
            vals.append(v)
        out.append(np.concatenate(vals))
    return out


def _image_stats(x: np.ndarray, metrics: tuple[str, ...], max_lag: int | None) -> dict:
    """Per-image curves and spreads of one block (B, C, H, W): semivariograms, PSDs, ranges."""
    out = {}
    if "semivariogram" in metrics:
        sv = _per_channel(lambda z: semivariogram(z, max_lag=max_lag), x)
        out.update({f"sv_{key}": sv[key] for key in ("gamma", "gamma_x", "gamma_y")})
    if "psd" in metrics:
        out["psd"] = _per_channel(radial_psd, x)["psd"]
    if "ranges" in metrics:
        spread = _per_channel(sample_spread, x)
        out["range"], out["std"] = spread["range"], spread["std"]
    return out


def _radar_image_stats(x: np.ndarray, metrics: tuple[str, ...], units: str) -> dict:
    """Per-image speckle, SAR and wrapped-phase statistics of one block (B, C, H, W)."""
    out = {}
    if "speckle" in metrics:
        sp = _per_channel(speckle_stats, to_linear_intensity(x, units))
        out["enl"], out["cv"] = sp["enl"], sp["cv"]
    if "sar" in metrics:
        sar = _per_channel(sar_stats, to_linear_intensity(x, units))
        out.update({f"sar_{key}": value for key, value in sar.items()})
    if "phase" in metrics:
        out.update(_per_channel(phase_stats, wrap(x)))
    return out


def _sar_pixels(x: np.ndarray, units: str, per_image: int, rng, stats: _SetStats) -> None:
    """Random dB pixels of each channel, and the VV/VH ratio's of two-channel images, of one
    block into ``stats`` (``sar_db_<c>``, ``sar_pol``)."""
    intensity = to_linear_intensity(x, units)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.where(intensity > 0, 10 * np.log10(np.where(intensity > 0, intensity, 1.0)), np.nan)
    for ch, v in enumerate(_pixel_subset(db, per_image, rng)):
        stats.add(f"sar_db_{ch}", v)
    if x.shape[1] == 2:
        ratio = polarisation_ratio_db(intensity[:, 0], intensity[:, 1])
        keep = min(ratio.size, per_image * x.shape[0])
        stats.add("sar_pol", rng.choice(ratio, keep, replace=False) if keep < ratio.size else ratio)


def _centred(x: np.ndarray) -> np.ndarray:
    """``x`` minus each sample's mean per channel (all-NaN channels stay NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return x - np.nanmean(x, axis=(2, 3), keepdims=True)


def _collect(
    ds: DatasetFile,
    indices: np.ndarray,
    metrics: tuple[str, ...],
    max_lag: int | None,
    rng: np.random.Generator,
    centre: bool = False,
    units: str | None = None,
) -> _SetStats:
    """Per-sample statistics of the images ``indices`` of ``ds``, read in bounded blocks
    (``units``: how to read the values, default the file's)."""
    c, h, w = ds.info.shape
    units = ds.info.units if units is None else units
    stats = _SetStats()
    block = max(1, _BLOCK_BYTES // (16 * c * h * w * 4))
    per_image = max(1, HISTOGRAM_MAX_PIXELS // max(1, len(indices)))
    pixels: list[list[np.ndarray]] = [[] for _ in range(c)]
    for start in range(0, len(indices), block):
        chunk = indices[start : start + block]
        x = ds.images(chunk).astype(np.float64)
        stats.extend(_image_stats(x, metrics, max_lag))
        if ds.info.has_labels:
            stats.add("labels", ds.labels(chunk))
        if "sar" in metrics:
            _sar_pixels(x, units, per_image, rng, stats)
        if "histogram" in metrics:
            # the reference of unwrapped phase is arbitrary: each sample's mean goes
            x = _centred(x) if centre else x
            for ch, v in enumerate(_pixel_subset(x, per_image, rng)):
                pixels[ch].append(v)
        stats.extend(_radar_image_stats(x, metrics, units))
    if "histogram" in metrics:
        stats.parts["pixels"] = [np.concatenate(p) for p in pixels]
    return stats


def _nan_stat(fn, a: np.ndarray) -> float | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        v = float(fn(a))
    return v if math.isfinite(v) else None


def _json_clean(obj: Any) -> Any:
    """Lists instead of arrays, None instead of NaN/inf (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_clean(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _band_json(band: Band) -> dict[str, Any]:
    return {"mean": band.mean, "low": band.low, "high": band.high}


def _mean_over_channels(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _set_info(ds: DatasetFile, n_used: int) -> dict[str, Any]:
    i = ds.info
    return {
        "path": str(i.path),
        "n": i.n,
        "n_used": n_used,
        "kind": i.kind,
        "units": i.units,
        "shape": list(i.shape),
        "pixel_spacing_m": i.pixel_spacing_m,
    }


def _choose(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, cap, replace=False))


def empty_metrics() -> dict[str, Any]:
    """A metrics dictionary with every schema key present and nothing computed."""
    blank_set = dict.fromkeys(("path", "n", "n_used", "kind", "units", "shape", "pixel_spacing_m"))
    return {
        "schema": SCHEMA,
        "radardiff_version": __version__,
        "real": dict(blank_set),
        "fake": dict(blank_set),
        "settings": dict.fromkeys(
            (
                "max_samples",
                "seed",
                "bootstrap",
                "max_lag",
                "curve_channel",
                "histogram_max_pixels",
                "metrics",
                "feature_extractor",
                "likelihood_run",
                "mismatch_allowed",
                "histogram_centred",
            )
        ),
        "scalars": dict.fromkeys(SCALAR_KEYS),
        "semivariogram": None,
        "psd": None,
        "histogram": None,
        "ranges": None,
        "noise_samples": None,
        "sar": None,
        "memorisation": None,
        "maps": None,
    }


def _semivariogram_section(r, f, spacing, boot, rng, arrays, scalars):
    lags = np.arange(1, r.get("sv_gamma").shape[2] + 1, dtype=np.float64)
    arrays["sv_lags_px"] = lags
    for name, s in (("real", r), ("fake", f)):
        for key in ("gamma", "gamma_x", "gamma_y"):
            arrays[f"sv_{name}_{key}"] = s.get(f"sv_{key}")
    c = arrays["sv_real_gamma"].shape[1]
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for ch in range(c):
            means = [np.nanmean(arrays[f"sv_{n}_gamma"][:, ch], axis=0) for n in ("real", "fake")]
            errors.append(semivariogram_rel_error(*means))
    scalars["semivariogram_rel_error"] = _mean_over_channels(errors)
    bands = {
        n: mean_band(arrays[f"sv_{n}_gamma"][:, 0], n_boot=boot, rng=rng) for n in ("real", "fake")
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        directional = {
            axis: {
                n: np.nanmean(arrays[f"sv_{n}_gamma_{axis}"][:, 0], axis=0)
                for n in ("real", "fake")
            }
            for axis in ("x", "y")
        }
    return {
        "lags_px": lags,
        "lags_m": None if spacing is None else lags * spacing,
        "ci": bands["real"].method,
        "real": _band_json(bands["real"]),
        "fake": _band_json(bands["fake"]),
        "directional": directional,
    }


def _noise_section(arrays, scalars, idx: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-sample lag-1 semivariance, the lag-1 ratio and the noise-sample fractions."""
    lag1 = {}
    for name in ("real", "fake"):
        g = np.stack([arrays[f"sv_{name}_gamma_x"][:, :, 0], arrays[f"sv_{name}_gamma_y"][:, :, 0]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lag1[name] = np.nanmean(g, axis=0)  # (n_used, C)
        arrays[f"lag1_{name}"] = lag1[name]
    ratios, fractions, fractions_real, thresholds = [], [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for ch in range(lag1["real"].shape[1]):
            real, fake = lag1["real"][:, ch], lag1["fake"][:, ch]
            thr = NOISE_FACTOR * np.nanpercentile(real, NOISE_PERCENTILE)
            thresholds.append(thr)
            ratios.append(np.nanmean(fake) / np.nanmean(real))
            fractions.append(float(np.mean(fake > thr)))
            fractions_real.append(float(np.mean(real > thr)))
    scalars["lag1_ratio"] = _mean_over_channels(ratios)
    scalars["noise_fraction"] = _mean_over_channels(fractions)
    scalars["noise_fraction_real"] = _mean_over_channels(fractions_real)
    out: dict[str, Any] = {
        "threshold": thresholds[0],
        "factor": NOISE_FACTOR,
        "percentile": NOISE_PERCENTILE,
    }
    for name in ("fake", "real"):
        v = np.nan_to_num(lag1[name][:, 0], nan=-np.inf)
        order = np.argsort(-v, kind="stable")[:WORST_SHOWN]
        out[f"worst_{name}"] = idx[name][order]
        out[f"worst_{name}_lag1"] = lag1[name][order, 0]
    return out


def _psd_section(r, f, freq, boot, rng, arrays, scalars):
    arrays["psd_freq"] = freq
    arrays["psd_real"], arrays["psd_fake"] = r.get("psd"), f.get("psd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dists = [
            psd_log_rmse(
                np.nanmean(arrays["psd_real"][:, ch], 0), np.nanmean(arrays["psd_fake"][:, ch], 0)
            )
            for ch in range(arrays["psd_real"].shape[1])
        ]
    scalars["psd_log_rmse"] = _mean_over_channels(dists)
    return {
        "freq_cycles_per_px": freq,
        "real": _band_json(mean_band(arrays["psd_real"][:, 0], n_boot=boot, rng=rng)),
        "fake": _band_json(mean_band(arrays["psd_fake"][:, 0], n_boot=boot, rng=rng)),
    }


def _histogram_section(r, f, units, arrays, scalars):
    pr, pf = r.parts["pixels"], f.parts["pixels"]
    scalars["histogram_w1"] = _mean_over_channels([w1(a, b) for a, b in zip(pr, pf, strict=True)])
    hists = [histograms(a, b) for a, b in zip(pr, pf, strict=True)]
    arrays["hist_edges"] = np.stack([h.bin_edges for h in hists])
    arrays["hist_real"] = np.stack([h.real for h in hists])
    arrays["hist_fake"] = np.stack([h.fake for h in hists])
    return {
        "bin_edges": hists[0].bin_edges,
        "real": hists[0].real,
        "fake": hists[0].fake,
        "units": units,
    }


def _ranges_section(r, f, arrays, scalars):
    for key in ("range", "std"):
        arrays[f"{key}_real"], arrays[f"{key}_fake"] = r.get(key), f.get(key)
        c = arrays[f"{key}_real"].shape[1]
        scalars[f"{key}_w1"] = _mean_over_channels(
            [w1(arrays[f"{key}_real"][:, ch], arrays[f"{key}_fake"][:, ch]) for ch in range(c)]
        )
    return {
        "real_range": arrays["range_real"][:, 0],
        "fake_range": arrays["range_fake"][:, 0],
        "real_std": arrays["std_real"][:, 0],
        "fake_std": arrays["std_fake"][:, 0],
    }


def _feature_scalars(real_features, fake_features, k: int, rng, scalars) -> None:
    scalars["fid"] = fid(real_features, fake_features)
    result = kid(real_features, fake_features, rng=rng)
    scalars["kid_mean"], scalars["kid_std"] = result.mean, result.std
    pr = precision_recall(real_features, fake_features, k=k)
    scalars["precision"], scalars["recall"] = pr.precision, pr.recall


def _likelihood_scalars(lik, settings: dict, scalars: dict) -> None:
    scalars["bits_per_dim"] = lik.bits_per_dim
    scalars["bits_per_dim_continuous"] = lik.bits_per_dim_continuous
    scalars["bits_per_dim_stderr"] = lik.stderr
    scalars["bits_per_dim_steps"] = lik.steps
    scalars["bits_per_dim_n"] = lik.n
    settings["likelihood_run"] = str(lik.run_dir)


def _speckle_scalars(r: _SetStats, f: _SetStats, arrays: dict, scalars: dict) -> None:
    for name, s in (("real", r), ("fake", f)):
        arrays[f"enl_{name}"], arrays[f"cv_{name}"] = s.get("enl"), s.get("cv")
        scalars[f"enl_{name}"] = _nan_stat(np.nanmedian, arrays[f"enl_{name}"])
        scalars[f"cv_{name}"] = _nan_stat(np.nanmean, arrays[f"cv_{name}"])


def _phase_scalars(r: _SetStats, f: _SetStats, arrays: dict, scalars: dict) -> None:
    for name, s in (("real", r), ("fake", f)):
        for key in s.parts:
            if key.startswith(("grad_", "residue_density")):
                short = key.replace("grad_", "phase_grad_")
                arrays[f"{short}_{name}"] = s.get(key)
        scalars[f"residue_density_{name}"] = _nan_stat(
            np.nanmean, arrays[f"residue_density_{name}"]
        )


# per-image SAR statistics kept in arrays.npz and summarised per set (medians over images)
_SAR_KEYS = ("enl", "cv", "windows", "k2", "k3", "acf_x", "acf_y", "peak_db", "peak_contrast_db")
_DB_QUANTILES = (1, 5, 50, 95, 99)


def _sar_summary(s: _SetStats, mask: np.ndarray | None = None) -> dict[str, Any]:
    """Medians over the images (``mask``: of some only) of a set's SAR statistics, channel by
    channel, and the share of images whose ENL could be measured."""
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key in _SAR_KEYS:
            v = s.get(f"sar_{key}")
            v = v if mask is None else v[mask]
            out[key] = np.nanmedian(v, axis=0) if len(v) else None
        enl = s.get("sar_enl") if mask is None else s.get("sar_enl")[mask]
        out["enl_measurable"] = np.mean(np.isfinite(enl), axis=0) if len(enl) else None
    return out


def _sar_distances(r: _SetStats, f: _SetStats, scalars: dict) -> None:
    """The SAR scalars: fake against real, averaged over channels."""
    c = r.get("sar_k2").shape[1]
    per = {key: [] for key in ("enl", "k2", "k3", "acf", "db", "peak")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for ch in range(c):
            er, ef = (np.nanmedian(s.get("sar_enl")[:, ch]) for s in (r, f))
            per["enl"].append(ef / er)
            for key in ("k2", "k3"):
                per[key].append(w1(r.get(f"sar_{key}")[:, ch], f.get(f"sar_{key}")[:, ch]))
            acf = [abs(np.nanmedian(f.get(a)[:, ch, 0]) - np.nanmedian(r.get(a)[:, ch, 0]))
                   for a in ("sar_acf_x", "sar_acf_y")]  # fmt: skip
            per["acf"].append(float(np.mean(acf)))
            per["db"].append(w1(r.get(f"sar_db_{ch}"), f.get(f"sar_db_{ch}")))
            per["peak"].append(w1(r.get("sar_peak_db")[:, ch], f.get("sar_peak_db")[:, ch]))
    for key, name in (("enl", "sar_enl_ratio"), ("k2", "sar_k2_w1"), ("k3", "sar_k3_w1"),
                      ("acf", "sar_acf1_error"), ("db", "sar_db_w1"), ("peak", "sar_peak_db_w1")):  # fmt: skip
        scalars[name] = _mean_over_channels(per[key])
    if "sar_pol" in r.parts and "sar_pol" in f.parts:
        scalars["sar_pol_ratio_w1"] = w1(r.get("sar_pol"), f.get("sar_pol"))


def _sar_section(r: _SetStats, f: _SetStats, names: list[str] | None, arrays, scalars) -> dict:
    """The ``sar`` section: each set's medians, dB quantiles and polarisation ratio, per class
    where both sets have labels; the scalars fake against real."""
    section: dict[str, Any] = {}
    for name, s in (("real", r), ("fake", f)):
        for key in _SAR_KEYS:
            arrays[f"sar_{key}_{name}"] = s.get(f"sar_{key}")
        summary = _sar_summary(s)
        c = s.get("sar_k2").shape[1]
        summary["db_quantiles"] = {str(q): [np.percentile(s.get(f"sar_db_{ch}"), q)
                                            for ch in range(c)] for q in _DB_QUANTILES}  # fmt: skip
        pol = s.get("sar_pol") if "sar_pol" in s.parts else None
        summary["pol_ratio_db_median"] = None if pol is None or not pol.size else np.median(pol)
        section[name] = summary
    _sar_distances(r, f, scalars)
    section["by_class"] = _sar_by_class(r, f, names)
    return section


def _sar_by_class(r: _SetStats, f: _SetStats, names: list[str] | None) -> dict | None:
    """The per-class medians of both sets, where both have labels; a class of the real set
    without generated samples is said once."""
    if names is None or "labels" not in r.parts or "labels" not in f.parts:
        return None
    lr, lf = r.get("labels"), f.get("labels")
    out = {}
    for k in np.unique(lr):
        name = names[int(k)] if 0 <= int(k) < len(names) else str(int(k))
        if not np.any(lf == k):
            log.warning("class '%s' of the real set has no generated samples: left out of "
                        "the per-class SAR statistics", name)  # fmt: skip
            out[name] = {"real": _sar_summary(r, lr == k), "fake": None}
            continue
        out[name] = {"real": _sar_summary(r, lr == k), "fake": _sar_summary(f, lf == k)}
    return out


def _memorisation_section(
    train, rset: DatasetFile, fset: DatasetFile, plan: _Plan, arrays, scalars
):
    """Nearest-training distances of the generated samples used against those of the real
    samples used (images the model did not see: ``--real`` must be a held-out split)."""
    if train is None:
        raise ConfigError("metric 'memorisation' needs the training data (--train FILE.h5)")
    with DatasetFile(train) as tset:
        if Path(train).resolve() == rset.path.resolve():
            raise DataError(
                f"{train}: the memorisation check needs --real images the model did not see, "
                "not its training file"
            )
        if tset.info.shape != rset.info.shape:
            raise DataError(
                f"{train}: training images are {tset.info.shape}, the real ones {rset.info.shape}"
            )
        per_image = 8 * int(np.prod(tset.info.shape))
        cap = max(2, min(len(tset), _MEMORISATION_BYTES // per_image))
        idx = _choose(len(tset), cap, np.random.default_rng([plan.seed, 17]))
        result = memorisation(fset.images(plan.idx["fake"]), tset.images(idx),
                              rset.images(plan.idx["real"]))  # fmt: skip
    arrays["nn_distance_fake"] = result.fake_distances
    arrays["nn_distance_heldout"] = result.heldout_distances
    scalars["memorisation_ratio"] = result.ratio
    scalars["near_copy_fraction"] = result.near_copy_fraction
    return {"train": str(train), "n_train_used": len(idx), "n_train": len(tset),
            "n_fake": len(plan.idx["fake"]), "n_heldout": len(plan.idx["real"]),
            "fake_median": result.fake_median, "heldout_median": result.heldout_median,
            "ratio": result.ratio, "near_copy_fraction": result.near_copy_fraction}  # fmt: skip


def _fill_sections(r: _SetStats, f: _SetStats, plan: _Plan, cfg, info, result, arrays) -> None:
    """The curves, distributions and scalars of every requested metric into ``result`` (JSON)
    and ``arrays`` (npz); ``info`` is the real set's."""
    m, scalars, boot, rng = plan.metrics, result["scalars"], cfg.bootstrap, plan.rng
    if "semivariogram" in m:
        sv = _semivariogram_section(r, f, plan.spacing, boot, rng, arrays, scalars)
        result["semivariogram"] = sv
        result["noise_samples"] = _noise_section(arrays, scalars, plan.idx)
    if "psd" in m:
        freq = radial_frequencies(*info.shape[1:])
        result["psd"] = _psd_section(r, f, freq, boot, rng, arrays, scalars)
    if "histogram" in m:
        result["histogram"] = _histogram_section(r, f, info.units, arrays, scalars)
    if "ranges" in m:
        result["ranges"] = _ranges_section(r, f, arrays, scalars)
    if "speckle" in m:
        _speckle_scalars(r, f, arrays, scalars)
    if "phase" in m:
        _phase_scalars(r, f, arrays, scalars)
    if "sar" in m:
        result["sar"] = _sar_section(r, f, info.class_names, arrays, scalars)


def _check_max_lag(cfg: EvalConfig, metrics: tuple[str, ...], ds: DatasetFile) -> None:
    side = min(ds.info.shape[1:])
    if "semivariogram" in metrics and cfg.max_lag is not None and cfg.max_lag >= side:
        raise ConfigError(
            f"evaluate.max_lag={cfg.max_lag}: must be below the image side ({side} px) of {ds.path}"
        )


def _plan(
    rset: DatasetFile,
    fset: DatasetFile,
    cfg: EvalConfig,
    max_samples: int | None,
    seed: int | None,
    allow_mismatch: bool,
) -> _Plan:
    """Check that the sets are comparable and the request fits them, and choose the samples."""
    spacing, mismatch = _check_comparable(rset, fset, allow_mismatch)
    cap = max_samples or cfg.max_samples
    metrics = tuple(dict.fromkeys(cfg.metrics))
    _check_max_lag(cfg, metrics, rset)
    seed = cfg.seed if seed is None else seed
    rng = np.random.default_rng(seed)
    idx = {name: _choose(len(ds), cap, rng) for name, ds in (("real", rset), ("fake", fset))}
    _check_metrics(metrics, rset, len(idx["real"]))
    _check_metrics(metrics, fset, len(idx["fake"]))
    centre = rset.info.kind in CENTRED_KINDS
    units = {name: _intensity_units(ds, metrics) for name, ds in (("real", rset), ("fake", fset))}
    return _Plan(metrics, cap, seed, rng, idx, spacing, mismatch, centre, units)


def _intensity_units(ds: DatasetFile, metrics: tuple[str, ...]) -> str:
    """How SAR metrics read ``ds``: its units, or dB where it says linear but most of its values
    are negative (which only dB can be), with one line saying so."""
    units = ds.info.units
    reads_intensity = {"sar", "speckle"} & set(metrics) or (
        "maps" in metrics and ds.info.kind == "sar_backscatter"
    )
    if not reads_intensity or "db" in units.lower():
        return units
    sample = ds.images(slice(0, min(len(ds), 64)))
    finite = sample[np.isfinite(sample)]
    if finite.size and float(np.mean(finite < 0)) > DB_NEGATIVE_SHARE:
        log.warning(
            "%s: units '%s' but %.0f %% of the values are negative: read as dB for the SAR "
            "metrics", ds.path, units, 100 * float(np.mean(finite < 0)),
        )  # fmt: skip
        return "dB"
    return units


def _settings(plan: _Plan, cfg: EvalConfig) -> dict[str, Any]:
    return {
        "max_samples": plan.cap,
        "seed": plan.seed,
        "bootstrap": cfg.bootstrap,
        "max_lag": cfg.max_lag,
        "curve_channel": 0,
        "histogram_max_pixels": HISTOGRAM_MAX_PIXELS,
        "metrics": list(plan.metrics),
        "feature_extractor": None,
        "likelihood_run": None,
        "mismatch_allowed": plan.mismatch,
        "histogram_centred": plan.centre and "histogram" in plan.metrics,
    }


def _ready_extractor(extractor: Any, given_features: tuple, rset, fset) -> Any:
    """The extractor object to compute features with, checked against both sets; None when no
    extractor is asked for or both feature arrays are given."""
    if extractor is None or not any(f is None for f in given_features):
        return None
    from radardiff.evaluate.extractor import load_extractor

    ext = extractor if hasattr(extractor, "features") else load_extractor(extractor)
    ext.check_fits(rset.info)  # before the long statistics, not after
    ext.check_fits(fset.info)
    return ext


def _measure(rset: DatasetFile, fset: DatasetFile, cfg: EvalConfig, plan: _Plan):
    """The metrics dictionary (every schema key) and the arrays for ``arrays.npz``."""
    r = _collect(rset, plan.idx["real"], plan.metrics, cfg.max_lag, plan.rng, plan.centre,
                 plan.units.get("real"))  # fmt: skip
    f = _collect(fset, plan.idx["fake"], plan.metrics, cfg.max_lag, plan.rng, plan.centre,
                 plan.units.get("fake"))  # fmt: skip
    result = empty_metrics()
    result["real"] = _set_info(rset, len(plan.idx["real"]))
    result["fake"] = _set_info(fset, len(plan.idx["fake"]))
    result["settings"] = _settings(plan, cfg)
    arrays: dict[str, np.ndarray] = {}
    _fill_sections(r, f, plan, cfg, rset.info, result, arrays)
    return result, arrays


def _feature_metrics(ext, sets: tuple, plan: _Plan, given: tuple, k: int, result: dict) -> None:
    """FID, KID and precision/recall from the given features, or from ``ext`` on exactly the
    samples used."""
    real_features, fake_features = given
    if ext is not None:
        from radardiff.evaluate.extractor import features_of

        real_features = features_of(ext, sets[0], plan.idx["real"])
        fake_features = features_of(ext, sets[1], plan.idx["fake"])
        where = getattr(ext, "path", None)
        result["settings"]["feature_extractor"] = f"{ext.name} ({where})" if where else ext.name
    if real_features is not None and fake_features is not None:
        _feature_scalars(real_features, fake_features, k, plan.rng, result["scalars"])


def _write_results(out: Path, result: dict, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    result = _json_clean(result)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    _write_npz(out / "arrays.npz", arrays)
    return result


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    fd, tmp = temp_file_for(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _refuse_unmeasured(scalars: dict, fake) -> None:
    """A metrics file in which no metric is a finite number says nothing: refused, naming the
    cause, instead of written."""
    values = [v for v in scalars.values() if v is not None]
    if values and not any(isinstance(v, int | float) and math.isfinite(v) for v in values):
        raise DataError(
            f"{fake}: no metric came out as a finite number (the samples are not finite or hold "
            "no variation); nothing written"
        )


@holding("out_dir")
def evaluate_files(
    real: str | os.PathLike,
    fake: str | os.PathLike,
    cfg: EvalConfig,
    out_dir: str | os.PathLike,
    *,
    max_samples: int | None = None,
    seed: int | None = None,
    real_features: np.ndarray | None = None,
    fake_features: np.ndarray | None = None,
    k: int = 3,
    extractor: Any = None,
    likelihood: Any = None,
    allow_mismatch: bool = False,
    train: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Compare a generated dataset file with a real one; write metrics.json and arrays.npz.

    Parameters
    ----------
    real, fake : path
        Dataset files (HDF5, images in physical units, NaN = no data).
    cfg : EvalConfig
        ``metrics`` (:data:`radardiff.config.schema.MetricName`), ``max_lag`` (pixels),
        ``bootstrap`` (resamples for bands; 0: standard error), ``max_samples``, ``seed``.
    out_dir : path
        Folder for ``metrics.json`` and ``arrays.npz`` (created; both written atomically).
    max_samples, seed : int, optional
        Override ``cfg``'s: images used per set; seed of sample choice, pixel subsets, bootstraps.
    real_features, fake_features : ndarray (N, D), optional
        Features of both sets from one extractor: FID, KID, precision/recall (``k`` neighbours).
    extractor : path or extractor object, optional
        See :func:`.extractor.load_extractor`: features of exactly the images used, unless given.
    likelihood : RunBitsPerDim, optional
        From :func:`.likelihood.run_bits_per_dim`: the ``bits_per_dim*`` scalars.
    allow_mismatch : bool
        Compare sets of different kinds or pixel spacings (``settings.mismatch_allowed``).
    train : path, optional
        The model's training data, for ``memorisation`` (``real``: images it did not see).

    Returns the metrics dictionary exactly as written to ``metrics.json`` (schema above).
    Raises ConfigError (``max_lag`` not below the image side, ``memorisation`` without
    ``train``) or DataError (unreadable or incomparable files, too few samples for a
    statistic, a metric that does not apply to the kind, no finite metric).
    """
    given = (real_features, fake_features)
    with DatasetFile(real) as rset, DatasetFile(fake) as fset:
        plan = _plan(rset, fset, cfg, max_samples, seed, allow_mismatch)
        ext = _ready_extractor(extractor, given, rset, fset)
        result, arrays = _measure(rset, fset, cfg, plan)
        if "memorisation" in plan.metrics:
            result["memorisation"] = _memorisation_section(
                train, rset, fset, plan, arrays, result["scalars"]
            )
        if "maps" in plan.metrics:
            result["maps"] = maps_section(rset, fset, plan.idx, plan.units, result["scalars"])
        _feature_metrics(ext, (rset, fset), plan, given, k, result)
        if likelihood is not None:
            _likelihood_scalars(likelihood, result["settings"], result["scalars"])
    _refuse_unmeasured(result["scalars"], fake)
    return _write_results(Path(out_dir), result, arrays)
