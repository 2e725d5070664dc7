"""Per-seed generation from a trained run, resumable, in physical units.

Sample ``i`` of a request depends only on ``(seed, i)``: its initial noise, the noise of stochastic
samplers, its class (when drawn) and the per-sample statistics used to return it to physical units
all come from generators seeded with ``(seed, i)``. Batch size and process count change nothing.

Finished batches are written as parts beside the output (``OUT.parts/``, each renamed into place
when complete); a run started again with the same arguments reuses them, and the parts are merged
into the output dataset file at the end, so an interrupted run ends with exactly N samples.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radardiff import _stop
from radardiff._budget import Pace, check_space
from radardiff._files import OutputBusy, hold_output
from radardiff._hardware import PRECISIONS, describe_cpu, resolve_precision
from radardiff.config.schema import SampleConfig
from radardiff.data.dataset_file import DatasetFile
from radardiff.diffusion import SAMPLERS, Denoiser, PreparedSampler, initial_noise, make_sampler
from radardiff.diffusion.denoiser import CLIP_MODES, default_clip
from radardiff.diffusion.schedule import Schedule, signal_noise
from radardiff.errors import ConfigError, DiskFullError, RadarDiffError, is_disk_full
from radardiff.models import LoadedRun, condition_frame, upsample
from radardiff.models.network import NetworkPolicy, prepare_network
from radardiff.sample.device import (
    AUTO_BATCH,
    agree_batch_size,
    agree_flag,
    auto_batch_size,
    balanced,
)
from radardiff.sample.maps import (
    RequestMaps,
    check_request_maps,
    load_request_maps,
    map_digest,
)
from radardiff.sample.writers import output_format

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleOptions:
    """One sampling request.

    ``classes``: class indices given to samples in turn (``(2, 2, 5)`` is a 2:1 mix); None draws
    each sample's class uniformly from ``(seed, i)``. ``guidance``: classifier-free guidance
    scale w, ``eps = eps_null + w (eps_class - eps_null)`` (Ho and Salimans 2022); 1 is plain
    conditional sampling, 0 the unconditional (null-label) model. ``sampler_options``: see
    :func:`radardiff.diffusion.describe_samplers`. ``mixed_precision``: ``no``, ``bf16``, ``fp16``
    autocast of the network, or ``auto`` (bf16 where the device computes it fast, else fp32).
    ``clip``: x0 clipping, ``static``, ``dynamic`` or ``none`` (None: :func:`clip_mode` decides
    from the run). ``batch_size``: samples per batch, or ``auto``
    (:func:`radardiff.sample.device.auto_batch_size`: what fills a GPU's memory, 64 on a CPU).
    ``compile``: run the network compiled by ``torch.compile`` (for a fixed batch; CUDA graphs
    on a GPU). ``conv_kernels``: ``auto`` (radardiff's AVX2 kernels for the 3x3 and 1x1
    convolutions on a CPU in fp32 without ``compile``), ``radardiff`` (insist) or ``torch``
    (:func:`radardiff.models.network.prepare_network`). None of the three changes the samples beyond floating-point rounding, so none is
    in the signature.
    """

    n: int
    sampler: str = "dpmsolver++"
    steps: int = 25
    seed: int = 0
    batch_size: int | str = AUTO_BATCH
    classes: tuple[int, ...] | None = None
    guidance: float = 1.0
    sampler_options: dict[str, Any] = field(default_factory=dict)
    mixed_precision: str = "no"
    clip: str | None = None
    condition: str | None = None
    sr_noise: int = 0
    amplitude: float | None = None
    stream: int = 0
    condition_id: str = ""  # what made the condition file (a cascade's first-stage request)
    compile: bool = False
    conv_kernels: str = "auto"
    maps: str | None = None  # the map file of a map-conditioned run (radardiff.sample.maps)
    map_digest: str = ""  # its bytes' hash, filled in by generate()
    map_scale: int = 1  # the factor by which a cascade's first stage reduces the final map

    def signature(self) -> str:
        """Identifies the request's options (see :func:`request_signature` for the whole)."""
        d = asdict(self)
        for key in ("batch_size", "compile", "conv_kernels"):  # only floating-point rounding
            d.pop(key)
        if not self.maps:  # a request without maps signs as before maps existed
            for key in ("maps", "map_digest", "map_scale"):
                d.pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def request_signature(run: LoadedRun, opts: SampleOptions) -> str:
    """Everything the samples depend on: the options (sampler and its options, seeds,
    conditioning, clipping, precision) and the run, checkpoint and weights' hash. Parts of an
    interrupted request are reused only under the same signature."""
    if opts.maps and not opts.map_digest:
        opts = replace(opts, map_digest=map_digest(opts.maps))
    text = f"{opts.signature()}|{run.identity}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def request(sc: SampleConfig, n: int, **given) -> SampleOptions:
    """A request with the run's ``[sample]`` defaults for what is not given (None).

    The config's sampler options (and its ``eta``, when that sampler has one) apply to the
    config's own sampler only; ``sampler_options`` given here are added on top.
    """
    sampler = given.pop("sampler", None) or sc.sampler
    options = {}
    if sampler == sc.sampler:
        if "eta" in SAMPLERS.get(sampler, SAMPLERS["ddim"]).options and sc.eta:
            options["eta"] = sc.eta
        options.update(sc.options)
    options.update(given.pop("sampler_options", None) or {})
    clip = given.pop("clip", None)
    if clip is None and sc.clip != "auto":
        clip = sc.clip
    defaults = {"steps": sc.steps, "seed": sc.seed, "batch_size": sc.batch_size,
                "guidance": sc.guidance}  # fmt: skip
    for key, value in defaults.items():
        if given.get(key) is None:
            given[key] = value
    return SampleOptions(n=n, sampler=sampler, sampler_options=options, clip=clip, **given)


@dataclass
class SampleResult:
    path: Path
    n: int
    seconds: float
    reused: int


def clip_mode(run: LoadedRun, opts: SampleOptions) -> str:
    """How x0 estimates are clipped: as requested, else the run's default
    (:func:`radardiff.diffusion.denoiser.default_clip`)."""
    return default_clip(run.cfg, run.normalizer) if opts.clip is None else opts.clip


def _validate(run: LoadedRun, opts: SampleOptions) -> None:
    if opts.n < 1:
        raise ConfigError(f"--n must be at least 1, got {opts.n}")
    if opts.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {opts.seed}")
    b = opts.batch_size
    if b != AUTO_BATCH and (isinstance(b, str) or b < 1):
        raise ConfigError(f"--batch-size must be at least 1 or '{AUTO_BATCH}', got {b!r}")
    _validate_conditioning(run, opts)
    k = run.num_classes
    if opts.classes is not None:
        if not k:
            raise ConfigError("--class given but the model is unconditional")
        bad = [c for c in opts.classes if not 0 <= c < k]
        if bad:
            raise ConfigError(f"--class {bad[0]} is out of range: the model has classes 0..{k - 1}")
    if not (math.isfinite(opts.guidance) and opts.guidance >= 0):
        raise ConfigError(f"--guidance must be a finite number >= 0, got {opts.guidance}")
    if opts.guidance != 1.0 and not k and run.normalizer.maps is None:
        raise ConfigError(
            "--guidance needs a class- or map-conditional model; this one is unconditional"
        )
    check_request_maps(run, opts.maps)
    if opts.mixed_precision not in PRECISIONS:
        raise ConfigError(
            f"--precision must be one of {', '.join(PRECISIONS)}, got '{opts.mixed_precision}'"
        )
    if opts.clip is not None and opts.clip not in CLIP_MODES:
        raise ConfigError(f"--clip must be one of {', '.join(CLIP_MODES)}, got '{opts.clip}'")


def _validate_conditioning(run: LoadedRun, opts: SampleOptions) -> None:
    m = run.cfg.model
    if m.superres_low_size:
        if not opts.condition:
            raise ConfigError(
                f"{run.run.root}: a super-resolution run needs low-resolution images: "
                "--cascade LOW_RUN or --low-res FILE.h5"
            )
        _check_sr_noise(run, opts)
        low = open_condition(opts.condition)
        shape = (run.normalizer.channels, m.superres_low_size, m.superres_low_size)
        if tuple(low.info.shape) != shape:
            raise ConfigError(
                f"{low.path}: images are {tuple(low.info.shape)} (C, H, W) but the "
                f"super-resolution run takes {shape}"
            )
        if opts.n > len(low):
            raise ConfigError(f"--n {opts.n}: {low.path} holds only {len(low)} images")
    elif opts.condition:
        raise ConfigError(
            f"{run.run.root}: --low-res / --cascade need a super-resolution run "
            "(model.superres_low_size), this one is not"
        )
    if opts.amplitude is not None:
        if not m.range_conditioning:
            raise ConfigError(
                f"--amplitude needs a run trained with model.range_conditioning; {run.run.root} "
                "was not"
            )
        if not (math.isfinite(opts.amplitude) and opts.amplitude > 0):
            raise ConfigError(f"--amplitude must be a positive number, got {opts.amplitude}")


def _check_sr_noise(run: LoadedRun, opts: SampleOptions) -> None:
    top = run.cfg.model.superres_aug_max
    if not 0 <= opts.sr_noise <= top:
        raise ConfigError(
            f"--sr-noise must be in 0..{top} (the run's superres_aug_max), got {opts.sr_noise}"
        )


def open_condition(path: str | Path) -> DatasetFile:
    """The dataset file of low-resolution conditions (a clear error if it is not one)."""
    try:
        return DatasetFile(path)
    except RadarDiffError as err:
        raise ConfigError(f"low-resolution condition: {err}") from None


def sample_classes(run: LoadedRun, opts: SampleOptions, idx: np.ndarray) -> np.ndarray | None:
    """Class of each sample: the requested ones in turn, or drawn uniformly from (seed, i)."""
    if not run.num_classes:
        return None
    if opts.classes:
        return np.asarray([opts.classes[i % len(opts.classes)] for i in idx], dtype=np.int64)
    return np.asarray(
        [np.random.default_rng([opts.seed, int(i), 7]).integers(run.num_classes) for i in idx],
        dtype=np.int64,
    )


def _seeded(*key: int) -> torch.Generator:
    """A CPU generator seeded from ``key`` through a SeedSequence."""
    return torch.Generator().manual_seed(
        int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])
    )


def _generators(opts: SampleOptions, idx: np.ndarray) -> list[torch.Generator]:
    """One generator per sample, seeded from ``(seed, i)`` (``(seed, i, stream)`` for a stream
    other than 0)."""
    tail = [opts.stream] if opts.stream else []
    return [_seeded(opts.seed, i, *tail) for i in idx]


@dataclass
class BatchConditions:
    """What one batch is conditioned on, and how its output returns to physical units."""

    labels: np.ndarray | None  # class labels written with the samples
    stats: np.ndarray  # per-sample normaliser statistics for the inverse
    low: torch.Tensor | None = None  # the upsampled, framed, noised low-resolution condition
    level: torch.Tensor | None = None  # its noise-augmentation step
    frame: tuple[torch.Tensor, torch.Tensor] | None = None  # (c, h): output = c + h * y
    maps: np.ndarray | None = None  # the raw maps of the batch (written with the samples)
    map_planes: torch.Tensor | None = None  # the same encoded for the network

    def conditioning(self, denoiser: Denoiser, device: torch.device):
        """The network's conditioning of the batch (:meth:`Denoiser.condition`), on ``device``."""
        classes = None if self.labels is None else torch.from_numpy(self.labels)
        stats = torch.as_tensor(self.stats) if denoiser.cfg.model.range_conditioning else None
        return denoiser.condition(
            classes, stats=stats, low=self.low, level=self.level, maps=self.map_planes
        ).to(device)


def _sample_rng(opts: SampleOptions, i: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([opts.seed, int(i), purpose])


def batch_conditions(
    run: LoadedRun,
    opts: SampleOptions,
    idx: np.ndarray,
    condition: DatasetFile | None = None,
    maps: RequestMaps | None = None,
) -> BatchConditions:
    """Labels, statistics and network conditioning of samples ``idx`` (each from its own seed),
    with their maps (``maps``: the request's, read once by the caller, else here)."""
    m = run.cfg.model
    if m.superres_low_size:
        out = _superres_conditions(run, opts, idx, condition or open_condition(opts.condition))
    else:
        labels = sample_classes(run, opts, idx)
        stats = physical_stats(run, opts, idx, labels)
        if m.range_conditioning and opts.amplitude is not None:
            stats = with_range(stats, opts.amplitude)
        out = BatchConditions(labels=labels, stats=stats)
    if run.normalizer.maps is not None:
        maps = maps or load_request_maps(run, opts.maps, opts.n, opts.map_scale)
        out.maps = maps.of(idx)
        out.map_planes = torch.from_numpy(maps.encoder.encode(out.maps))
    return out


def with_range(stats: np.ndarray, amplitude: float) -> np.ndarray:
    """Min-max statistics (B, C, 2) with channel 0's range set to ``amplitude`` about its
    mid-point (the other channels as drawn)."""
    out = np.array(stats, dtype=np.float64, copy=True)
    mid = out[:, 0].mean(axis=-1)
    out[:, 0, 0], out[:, 0, 1] = mid - amplitude / 2, mid + amplitude / 2
    return out


def _superres_conditions(
    run: LoadedRun, opts: SampleOptions, idx: np.ndarray, condition: DatasetFile
) -> BatchConditions:
    """The low-resolution images ``idx``: normalised with their own statistics (which return the
    output to physical units), framed as in training, upsampled, noised to level ``sr_noise``."""
    m = run.cfg.model
    low = run.normalizer.transform(condition.images(idx))
    low_v = torch.from_numpy(low.images).float()
    c, h = condition_frame(low_v)
    cond = upsample((low_v - c) / h, m.image_size)
    if opts.sr_noise > 0:  # q(c_s | c) at the trained level s, noise from (seed, i, 13)
        noise = torch.stack(
            [torch.randn(cond.shape[1:], generator=_seeded(opts.seed, i, 13)) for i in idx]
        )
        a, s = signal_noise(Schedule(run.cfg.diffusion).alphas_cumprod[opts.sr_noise])
        cond = a * cond + s * noise
    level = torch.full((len(idx),), float(opts.sr_noise))
    return BatchConditions(
        labels=condition.labels(idx), stats=low.stats, low=cond, level=level, frame=(c, h)
    )


def _device_of(run: LoadedRun) -> torch.device:
    return next(run.model.parameters()).device


@dataclass
class Sampling:
    """The sampler and the denoiser of one request (built once, used for every batch)."""

    prepared: PreparedSampler
    denoiser: Denoiser
    eager: Denoiser | None = None  # the same on the network as it is (``denoiser``'s: compiled?)
    kernels: str = ""  # whose convolutions run, and why (the log line)

    def __post_init__(self) -> None:
        self.eager = self.eager or self.denoiser

    @classmethod
    def of(cls, run: LoadedRun, opts: SampleOptions) -> Sampling:
        prepared = make_sampler(opts.sampler, run.cfg.diffusion, opts.steps, opts.sampler_options)
        device = _device_of(run)
        precision = resolve_precision(opts.mixed_precision, device, "--precision")
        # channels-last convolutions on the CPU: oneDNN's and radardiff's kernels are faster in
        # that layout there (docs/performance.md); not measured on a GPU, so off
        net = prepare_network(run.model, device, NetworkPolicy(
            kernels=opts.conv_kernels, option="--conv-kernels", precision=precision,
            channels_last=device.type == "cpu", compile=opts.compile,
        ))  # fmt: skip
        eager = Denoiser.from_run(
            run,
            channels_last=net.policy.channels_last,
            clip=clip_mode(run, opts),
            guidance=opts.guidance,
            precision=precision,
            schedule=prepared.schedule,
        )
        if not opts.compile:
            return cls(prepared, eager, eager, net.line)
        network = net.compiled(cache=run.compiled)
        return cls(prepared, eager.with_options(network=network), eager, net.line)

    def probe(
        self,
        run: LoadedRun,
        opts: SampleOptions,
        condition: DatasetFile | None,
        maps: RequestMaps | None = None,
    ):
        """``probe(rows)``: one eager network call on ``rows`` samples of the request, as a batch
        of it is called (guidance, conditioning), for measuring the memory a sample takes
        (``maps``: the request's, read once by the caller, else here)."""
        if maps is None:
            maps = load_request_maps(run, opts.maps, opts.n, opts.map_scale)

        def call(rows: int) -> None:
            idx = np.arange(rows)
            cond = batch_conditions(run, opts, idx, condition, maps)
            device = _device_of(run)
            size = run.cfg.model.image_size
            x = torch.zeros(rows, run.data_channels, size, size, device=device)
            t = torch.full((rows,), run.cfg.diffusion.timesteps // 2, device=device)
            self.eager.bind(cond.conditioning(self.eager, device))(x, t)

        return call


def denoise_batch(
    run: LoadedRun,
    opts: SampleOptions,
    idx: np.ndarray,
    cond: BatchConditions | None = None,
    sampling: Sampling | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples ``idx`` of the request in network space (float32, (B, C, H, W)) and their class
    labels; ``cond`` defaults to :func:`batch_conditions`."""
    cond = cond or batch_conditions(run, opts, idx)
    sampling = sampling or Sampling.of(run, opts)
    device = _device_of(run)
    gens = _generators(opts, idx)
    size = run.cfg.model.image_size
    x = initial_noise(gens, (run.data_channels, size, size)).to(device)
    denoise = sampling.denoiser.bind(cond.conditioning(sampling.denoiser, device))
    y = sampling.prepared.run(denoise, x, gens).float().cpu()
    if cond.frame is not None:
        c, h = cond.frame
        y = c + h * y
    return y.numpy(), cond.labels


def physical_stats(
    run: LoadedRun, opts: SampleOptions, idx: np.ndarray, labels: np.ndarray | None
) -> np.ndarray:
    """Per-sample normalisation statistics drawn from the training set's (per class when
    labelled), sample ``i`` from its own generator ``(seed, i, 11)``."""
    return np.concatenate(
        [
            run.normalizer.draw_stats(
                1, _sample_rng(opts, i, 11), None if labels is None else labels[k : k + 1]
            )
            for k, i in enumerate(idx)
        ]
    )


def generate_batch(
    run: LoadedRun,
    opts: SampleOptions,
    idx: np.ndarray,
    condition: DatasetFile | None = None,
    sampling: Sampling | None = None,
    maps: RequestMaps | None = None,
) -> dict[str, np.ndarray]:
    """Samples ``idx`` of the request, in physical units, with their labels, seeds, statistics
    and maps."""
    cond = batch_conditions(run, opts, idx, condition, maps)
    y, _ = denoise_batch(run, opts, idx, cond, sampling)
    images = run.normalizer.inverse(y, cond.stats)
    _refuse_non_finite(y, images, idx)
    _warn_far_outside(run, y, images, idx)
    out = {
        "images": images,
        "seeds": np.asarray(idx, np.int64),
        "stats": np.asarray(cond.stats, np.float32),
    }
    if cond.labels is not None:
        out["labels"] = cond.labels
    if cond.maps is not None:
        out["maps"] = np.asarray(cond.maps, np.float32)
    return out


class NonFiniteSamples(RadarDiffError):
    """The network or the return to physical units gave NaN or infinite values."""


def _refuse_non_finite(y: np.ndarray, images: np.ndarray, idx: np.ndarray) -> None:
    """A generated sample is finite everywhere (the network fills every pixel): NaN or inf in one
    means diverged weights, a broken kernel or an overflow in the return to physical units, and
    is refused, naming the samples, instead of written."""
    bad_net = ~np.isfinite(y).reshape(len(y), -1).all(axis=1)
    bad = bad_net | ~np.isfinite(images).reshape(len(images), -1).all(axis=1)
    if not bad.any():
        return
    seeds = ", ".join(str(int(i)) for i in np.asarray(idx)[bad][:5])
    more = "..." if bad.sum() > 5 else ""
    where = (
        "the network's output (the weights, the sampler or a kernel diverged)"
        if bad_net.any()
        else "the return to physical units (values too large for float32)"
    )
    raise NonFiniteSamples(
        f"{int(bad.sum())} of {len(y)} samples (sample indices {seeds}{more}) are NaN or infinite "
        f"in {where}; nothing written for them"
    )


# where the network-space values of training data lie, per normalisation, and how far beyond
# (in widths of that interval) a sample must reach to be reported as broken
_NETWORK_RANGE = {
    "minmax_pm1": (-1.0, 1.0),
    "global_minmax": (-1.0, 1.0),
    "minmax_01": (0.0, 1.0),
    "standardize": (-5.0, 5.0),
    "global_standardize": (-5.0, 5.0),
}
FAR_OUTSIDE_WIDTHS = 2.0


def _warn_far_outside(run: LoadedRun, y: np.ndarray, images: np.ndarray, idx: np.ndarray) -> None:
    """Warn about samples whose network-space values reach more than FAR_OUTSIDE_WIDTHS widths of
    the training data's range beyond it (a diverged model or a wrong condition: a
    super-resolution run's +-5000 dB). They are kept: the warning names their seeds."""
    span = _NETWORK_RANGE.get(run.normalizer.method)
    if span is None:
        return
    lo, hi = span
    margin = FAR_OUTSIDE_WIDTHS * (hi - lo)
    with np.errstate(invalid="ignore"):
        far = ((y < lo - margin) | (y > hi + margin)).reshape(len(y), -1).any(axis=1)
    if far.any():
        worst = float(np.nanmax(np.abs(images[far])))
        seeds = ", ".join(str(int(i)) for i in np.asarray(idx)[far][:5])
        log.warning(
            "%d of %d samples (seeds %s%s) lie far outside the training data's range "
            "(|value| up to %.4g in physical units): the model or its condition is off; check "
            "them before use",
            int(far.sum()), len(y), seeds, "..." if far.sum() > 5 else "", worst,
        )  # fmt: skip


ProgressFn = Callable[[int, int], None]


def _distributed_state():
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        return PartialState(cpu=not torch.cuda.is_available())
    return None


def generate(
    run: LoadedRun,
    opts: SampleOptions,
    out: str | Path,
    on_progress: ProgressFn | None = None,
    rank: int | None = None,
    world: int | None = None,
    merge: bool = True,
) -> SampleResult:
    """Generate ``opts.n`` samples into the dataset file ``out`` (resumable, see module doc).

    Under torchrun / accelerate launch each process takes every ``world``-th batch and process 0
    merges all parts once every process is done. ``rank`` / ``world`` may be given explicitly.
    """
    _validate(run, opts)
    opts = _resolved(run, opts)
    precision = opts.mixed_precision
    output_format(Path(out))  # a bad extension fails now, not after the last batch
    sampling = Sampling.of(run, opts)  # a bad sampler or option fails now too
    log.info("torch CPU threads: %d (radardiff --threads N to change)", torch.get_num_threads())
    log.info("precision: %s (CPU %s)", {"no": "fp32"}.get(precision, precision), describe_cpu())
    log.info("%s", sampling.kernels)
    try:
        return _generate(run, opts, Path(out), sampling, on_progress, rank, world, merge)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFullError(f"{out}: disk full while writing samples") from None
        raise


def _generate(run, opts, out: Path, sampling, on_progress, rank, world, merge) -> SampleResult:
    state = _distributed_state() if rank is None else None
    if rank is None:
        rank, world = (state.process_index, state.num_processes) if state else (0, 1)
    world = world or 1
    if not 0 <= rank < world:
        raise ConfigError(f"process rank {rank} is out of range for {world} process(es)")
    out = Path(out)
    check_space(out, bytes_needed(run, opts, out), f"{opts.n} samples")  # each process alike
    # process 0 holds the output for the whole request (parts, merge); the others follow it
    with contextlib.ExitStack() as held:
        ok = True
        if rank == 0:
            try:
                held.enter_context(hold_output(out))
            except OutputBusy:
                ok = False
                if state is None:
                    raise
        if state is not None and not agree_flag(ok, _device_of(run)):
            if rank == 0:
                held.enter_context(hold_output(out))  # raises the one-line refusal
            raise RadarDiffError(f"{out}: process 0 could not take the output; see its error")
        return _generate_held(run, opts, out, sampling, on_progress, rank, world, merge, state)


def _generate_held(run, opts, out: Path, sampling, on_progress, rank, world, merge, state):
    if state is not None and rank != 0:
        state.wait_for_everyone()  # rank 0 clears parts of another request first
    parts = PartStore(out, request_signature(run, opts))
    if state is not None and rank == 0:
        state.wait_for_everyone()
    try:
        return _generate_parts(run, opts, out, sampling, on_progress, rank, world, merge, state,
                               parts)  # fmt: skip
    except BaseException:
        if rank == 0:
            parts.discard_if_empty()  # a request that failed before its first batch leaves none
        raise


def _generate_parts(run, opts, out, sampling, on_progress, rank, world, merge, state, parts):
    t0 = time.perf_counter()
    condition = open_condition(opts.condition) if opts.condition else None
    maps = load_request_maps(run, opts.maps, opts.n, opts.map_scale)
    batch = _batch_size(run, opts, sampling, condition, world, maps)
    mine = range(rank * batch, opts.n, batch * world)  # this process's batches: every world-th
    total = sum(min(batch, opts.n - s) for s in mine)
    done = reused = 0
    pace = Pace(str(out), total)
    for first in mine:
        _stop.check()
        idx = np.arange(first, min(first + batch, opts.n))
        if parts.has(idx):
            reused += idx.size
        else:
            parts.write(idx, generate_batch(run, opts, idx, condition, sampling, maps))
            pace.done(done + idx.size, reused)
        done += idx.size
        if on_progress is not None:
            on_progress(done, total)
    if state is not None:
        state.wait_for_everyone()
    if rank == 0 and merge:
        out = merge_parts(run, opts, parts, out)  # a .tif request writes a folder
    if state is not None:
        state.wait_for_everyone()
    return SampleResult(path=out, n=opts.n, seconds=time.perf_counter() - t0, reused=reused)


def _batch_size(run, opts, sampling: Sampling, condition, world: int, maps=None) -> int:
    """``opts.batch_size``, or the device's choice for ``auto``, agreed by all processes."""
    if opts.batch_size != AUTO_BATCH:
        log.info("batch size: %d", opts.batch_size)
        return int(opts.batch_size)
    device = _device_of(run)
    batch, why = auto_batch_size(device, sampling.probe(run, opts, condition, maps),
                                  -(-opts.n // world))  # fmt: skip
    agreed = agree_batch_size(batch, device)
    even = balanced(agreed, opts.n)
    if agreed != batch:
        why += f"; {agreed}, another process's choice"
    if even != agreed:
        why += f"; {agreed} balanced over {opts.n} samples"
    log.info("batch size: %d (%s)", even, why)
    return even


def lowres_path(out: str | Path) -> Path:
    """Where a cascade keeps its first stage's low-resolution samples: beside ``out``."""
    out = Path(out)
    return out.with_name(out.stem + ".lowres.h5")


def generate_cascade(
    low_run: LoadedRun,
    low_opts: SampleOptions,
    sr_run: LoadedRun,
    sr_opts: SampleOptions,
    out: str | Path,
    on_progress: ProgressFn | None = None,
) -> tuple[SampleResult, SampleResult]:
    """Low-resolution samples from ``low_run``, then super-resolution samples of them.

    The first stage is written to :func:`lowres_path` (a dataset file in physical units, kept:
    it is the condition of each output sample, and a finished one is reused when the cascade
    runs again); the second stage conditions sample i on low-resolution sample i and draws its
    noise from the seed sub-stream 1. Both stages resume like :func:`generate`.
    """
    m = sr_run.cfg.model
    if not m.superres_low_size:
        raise ConfigError(f"{sr_run.run.root}: --cascade needs a super-resolution run to finish it")
    if low_run.cfg.model.image_size != m.superres_low_size:
        raise ConfigError(
            f"{low_run.run.root}: makes {low_run.cfg.model.image_size} px images but "
            f"{sr_run.run.root} super-resolves {m.superres_low_size} px ones"
        )
    if low_run.normalizer.channels != sr_run.normalizer.channels:
        raise ConfigError(
            f"{low_run.run.root}: {low_run.normalizer.channels} channel(s), but the "
            f"super-resolution run has {sr_run.normalizer.channels}"
        )

    low_opts, sr_opts = _cascade_maps(low_run, low_opts, sr_run, sr_opts)
    _check_sr_noise(sr_run, sr_opts)  # the second stage's errors, before the first stage runs
    make_sampler(sr_opts.sampler, sr_run.cfg.diffusion, sr_opts.steps, sr_opts.sampler_options)
    output_format(Path(out))

    def stage(k: int) -> ProgressFn | None:  # one bar over both stages
        if on_progress is None:
            return None
        return lambda done, total: on_progress(k * total + done, 2 * total)

    low_out = lowres_path(out)
    if finished(low_out, low_run, low_opts):
        first = SampleResult(path=low_out, n=low_opts.n, seconds=0.0, reused=low_opts.n)
    else:
        first = generate(low_run, low_opts, low_out, stage(0))
    second_opts = replace(
        sr_opts,
        n=low_opts.n,
        condition=str(first.path),
        stream=1,
        condition_id=request_signature(low_run, low_opts),
    )
    return first, generate(sr_run, second_opts, out, stage(1))


def _cascade_maps(low_run, low_opts, sr_run, sr_opts) -> tuple[SampleOptions, SampleOptions]:
    """The map of each stage of a map-conditioned cascade: the final map to the stages trained
    with maps, reduced to the first stage's size (one map followed at each resolution)."""
    path = sr_opts.maps or low_opts.maps
    if not path:
        return low_opts, sr_opts
    if low_run.normalizer.maps is None and sr_run.normalizer.maps is None:
        check_request_maps(sr_run, path)  # refuses --map: neither stage takes maps
    factor = sr_run.cfg.model.image_size // low_run.cfg.model.image_size
    low_has = low_run.normalizer.maps is not None
    low_opts = replace(low_opts, maps=path if low_has else None, map_scale=factor if low_has else 1)
    return low_opts, replace(sr_opts, maps=path if sr_run.normalizer.maps is not None else None)


def _resolved(run: LoadedRun, opts: SampleOptions) -> SampleOptions:
    """The request as it is signed: ``auto`` precision resolved (so that the file records, and a
    resume compares, what autocast ran) and the map file's digest filled in."""
    precision = resolve_precision(opts.mixed_precision, _device_of(run), "--precision")
    return replace(opts, mixed_precision=precision, map_digest=map_digest(opts.maps))


def finished(path: Path, run: LoadedRun, opts: SampleOptions) -> bool:
    """Whether ``path`` is a complete output of this very request and checkpoint."""
    if not path.is_file():
        return False
    try:
        f = DatasetFile(path)
        attrs = f.attrs()
    except (RadarDiffError, OSError):
        return False
    signature = request_signature(run, _resolved(run, opts))
    return attrs.get("request") == signature and len(f) == opts.n


def bytes_needed(run: LoadedRun, opts: SampleOptions, out: Path) -> int:
    """Disk space a request still needs: the parts not yet written (those of an interrupted run
    of it count as written), and the output beside them while they are merged (a PNG grid is
    small)."""
    size = run.cfg.model.image_size
    per_sample = 4 * run.normalizer.channels * size * size + 64
    parts_dir = out.with_name(out.name + ".parts")
    have = sum(p.stat().st_size for p in parts_dir.glob("part_*[0-9].npz"))
    parts = max(0, opts.n * per_sample - have)
    final = 0 if output_format(out) == "png" else opts.n * per_sample
    return parts + final


class PartStore:
    """Completed batches of one request, as ``.npz`` files renamed into place when whole.

    ``signature`` is :func:`request_signature`: parts left by another request (other options,
    another run, checkpoint or weights) are removed, with a notice, never mixed in.
    """

    def __init__(self, out: Path, signature: str) -> None:
        self.out = out
        self.dir = out.with_name(out.name + ".parts")
        self.created = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        sig = self.dir / "request.json"
        if sig.is_file() and _stored_signature(sig) != signature:
            done = len(list(self.dir.glob("part_*[0-9].npz")))
            log.warning(
                "%s: %d finished part(s) of another request (options, run, checkpoint or weights "
                "differ) removed; sampling starts afresh",
                self.dir,
                done,
            )
            shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True)
        if not sig.is_file():
            sig.write_text(json.dumps({"signature": signature}), encoding="utf-8")

    def _path(self, idx: np.ndarray) -> Path:
        return self.dir / f"part_{int(idx[0]):09d}_{int(idx[-1]):09d}.npz"

    def discard_if_empty(self) -> None:
        """Remove the folder when this request made it and finished no part in it."""
        if self.created and not any(self.dir.glob("part_*[0-9].npz")):
            shutil.rmtree(self.dir, ignore_errors=True)

    def has(self, idx: np.ndarray) -> bool:
        return self._path(idx).is_file()

    def write(self, idx: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        final = self._path(idx)
        tmp = final.with_name(final.stem + ".tmp.npz")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            if isinstance(err, Exception) and is_disk_full(err):
                raise DiskFullError(f"{final}: disk full while writing samples") from None
            raise
        _stop.check()
        os.replace(tmp, final)

    def load_all(self, n: int) -> dict[str, np.ndarray]:
        """All samples 0..n-1 in order; parts of another batch size are used where they fit."""
        chunks: dict[int, dict[str, np.ndarray]] = {}
        for p in sorted(self.dir.glob("part_*[0-9].npz")):
            with np.load(p) as z:
                arr = {k: z[k] for k in z.files}
            for k, i in enumerate(arr["seeds"]):
                chunks.setdefault(int(i), {key: v[k] for key, v in arr.items()})
        missing = [i for i in range(n) if i not in chunks]
        if missing:
            raise RadarDiffError(
                f"{self.dir}: {len(missing)} samples missing (first: {missing[0]})"
            )
        return {key: np.stack([chunks[i][key] for i in range(n)]) for key in chunks[0]}


def _stored_signature(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("signature")
    except (OSError, ValueError, AttributeError):
        return None  # unreadable: treated as another request's


def merge_parts(run: LoadedRun, opts: SampleOptions, parts: PartStore, out: Path) -> Path:
    """Write the dataset file from the parts, then remove them."""
    from radardiff.sample.writers import write_samples

    arrays = parts.load_all(opts.n)
    written = write_samples(run, opts, arrays, out, request_signature(run, opts))
    shutil.rmtree(parts.dir, ignore_errors=True)
    return written
