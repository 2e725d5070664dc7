r"""Bits per dimension of a real dataset under a trained run (its EMA model and normaliser).

The bound is :func:`radardiff.diffusion.likelihood.dataset_bits_per_dim`:
:math:`-\log_2 p(x_0)/D \le L_T + \sum_k L_k + L_0`, each term in bits per valid dimension, over
all T trained steps (``steps=None``) or K evenly spread steps of the trained schedule (a valid,
looser bound; Nichol & Dhariwal 2021, sec. 4).

Units: the data are mapped to the network's space by the run's normaliser (per-sample min-max to
[-1, 1] by default), so the numbers are bits per dimension **of the normalised data**. Radar data
are continuous, not 8-bit: two decoders are reported, as the diffusion layer documents.
``bits_per_dim`` uses the discretised decoder (bins of width 2/255 on [-1, 1], Ho et al. 2020;
comparable with the image literature and the reference paper) and ``bits_per_dim_continuous``
the Gaussian density of :math:`x_0` (a bound on a differential entropy; can be negative).
Neither includes the per-sample statistics that the normaliser removed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from radardiff.data import DatasetFile
from radardiff.data.maps import select_channels
from radardiff.data.normalize import valid_sample_indices
from radardiff.diffusion import Denoiser, GaussianDiffusion, dataset_bits_per_dim
from radardiff.errors import DataError
from radardiff.models import load_run


@dataclass
class RunBitsPerDim:
    """Bits/dim of ``n`` samples of ``data_file`` under the run in ``run_dir``."""

    bits_per_dim: float  # discretised decoder
    bits_per_dim_continuous: float  # continuous Gaussian decoder
    stderr: float  # standard error of bits_per_dim over the samples
    prior: float  # L_T, bits/dim
    steps: int  # K kept timesteps (T when all)
    n: int
    run_dir: Path
    data_file: Path
    terms: np.ndarray = field(repr=False)  # (K,) mean L_k, bits/dim
    timesteps: np.ndarray = field(repr=False)  # (K,) trained timestep of each kept step


def run_bits_per_dim(
    run_dir: str | os.PathLike,
    data_file: str | os.PathLike,
    steps: int | None = None,
    n: int = 256,
    *,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> RunBitsPerDim:
    """Variational bound (bits/dim) of ``n`` samples of ``data_file`` under the run's EMA model.

    Parameters
    ----------
    steps : None for all T trained steps, else K evenly spread steps (2 <= K <= T).
    n : samples used: the first ``n`` (in file order) of a permutation seeded with ``seed``,
        among those that hold data.
    seed : also seeds the forward-process noise (one ``torch.Generator`` drawn batch after
        batch, so the Monte-Carlo estimate depends on ``batch_size`` too; its expectation does
        not).

    Raises
    ------
    DataError
        The file does not fit the run (channels, size, kind) or lacks labels that a
        class-conditional run needs; ``n`` < 1.
    """
    if n < 1:
        raise DataError(f"likelihood: n must be at least 1, got {n}")
    run = load_run(run_dir, weights="ema", device=device)
    T = run.cfg.diffusion.timesteps
    if steps is not None and not 2 <= int(steps) <= T:
        raise DataError(
            f"--likelihood-steps must be between 2 and {T} (the trained T), got {steps}"
        )
    norm, labels, maps = _read_samples(run, data_file, n, seed)
    diffusion = GaussianDiffusion(run.cfg.diffusion).to(device)
    denoiser = Denoiser.from_run(run, schedule=diffusion.schedule)

    def model_fn(x, t, cond=None):
        return denoiser.network_output(x, t, cond or denoiser.condition()).float()

    batches = _batches(run, denoiser, norm, labels, batch_size, device, maps)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    r = dataset_bits_per_dim(model_fn, diffusion, batches, steps=steps, generator=gen)
    return RunBitsPerDim(
        bits_per_dim=r.total, bits_per_dim_continuous=r.total_continuous, stderr=r.total_stderr,
        prior=r.prior, steps=len(r.timesteps), n=r.n_samples, run_dir=Path(run_dir),
        data_file=Path(data_file), terms=r.terms, timesteps=r.timesteps,
    )  # fmt: skip


def _read_samples(run, data_file, n: int, seed: int):
    """The normalised samples used, their labels (None for an unconditional run) and their
    encoded maps (None for a run without maps)."""
    with DatasetFile(data_file) as ds:
        _check_fits(run, ds)
        valid = valid_sample_indices(ds, to_db=run.normalizer.to_db)  # streamed
        if valid.size == 0:
            raise DataError(f"{ds.path}: no sample holds data")
        idx = np.sort(np.random.default_rng(seed).permutation(valid)[:n])
        norm = run.normalizer.transform(ds.images(idx))
        labels = ds.labels(idx) if run.num_classes else None
        maps = None
        enc = run.normalizer.maps
        if enc is not None:
            pick = select_channels(ds.info.maps, enc.channels, str(ds.path))
            maps = enc.encode(ds.maps(idx)[:, pick])
    return norm, labels, maps


def _batches(run, denoiser: Denoiser, norm, labels, batch_size: int, device, maps=None):
    """``(x0, mask, {"cond": ...})`` per batch of the normalised samples, on ``device``."""
    for s in range(0, norm.images.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        x0 = torch.from_numpy(norm.images[sl]).to(device)
        mask = torch.from_numpy(norm.mask[sl]).to(device)
        classes = None if labels is None else torch.from_numpy(labels[sl])
        stats = torch.from_numpy(norm.stats[sl]) if run.cfg.model.range_conditioning else None
        planes = None if maps is None else torch.from_numpy(maps[sl])
        cond = denoiser.condition(classes, stats=stats, maps=planes).to(device)
        yield x0, mask, {"cond": cond}


def _check_fits(run, ds: DatasetFile) -> None:
    info, size = ds.info, run.cfg.model.image_size
    where = f"{ds.path}: does not fit the run {run.run.root}"
    if info.channels != run.normalizer.channels:
        raise DataError(
            f"{where} ({info.channels} channel(s), the run has {run.normalizer.channels})"
        )
    if (info.height, info.width) != (size, size):
        raise DataError(f"{where} ({info.height}x{info.width} images, the run has {size}x{size})")
    trained_kind = run.data_info.get("kind")
    if trained_kind and info.kind != trained_kind:
        raise DataError(f"{where} (kind '{info.kind}', the run was trained on '{trained_kind}')")
    if run.num_classes and not info.has_labels:
        raise DataError(f"{where} (no labels; the run is class-conditional)")
