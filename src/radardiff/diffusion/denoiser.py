"""The conditioned denoiser: one object that says what "call the network" means.

A run's network predicts eps, v or x0 (``diffusion.prediction``) from ``x_t = sqrt(abar) x0 +
sqrt(1 - abar) eps`` at a trained timestep, conditioned on a class, a per-sample range or a
low-resolution image. :class:`Denoiser` owns all of that: it builds the network's conditioning
inputs (:meth:`Denoiser.condition`), calls the network (:meth:`Denoiser.network_output`, what the
training losses, validation and likelihood take), and turns its output into the x0 / eps / v
triple at any continuous time (:meth:`Denoiser.__call__`, what samplers and distillation take),
with classifier-free guidance and x0 clipping applied the same way for every caller.

Parameterisations, with ``a = sqrt(abar)``, ``b = sqrt(1 - abar)`` (Salimans and Ho 2022 for v):

    eps: x0 = (x_t - b eps) / a          v: x0 = a x_t - b v,  eps = a v + b x_t
    x0:  eps = (x_t - a x0) / b          v = a eps - b x0

Clipping (for data normalised into [-1, 1]) changes x0 and re-derives eps from it and x_t
(``eps = (x_t - a x0c) / b``), as improved/guided-diffusion's ``clip_denoised``: every sampler
then sees one coherent (x0, eps) pair. ``static`` clamps to [-1, 1]; ``dynamic`` (Saharia et al.
2022, Imagen) takes each sample's ``p``-quantile ``s`` of ``|x0|``, clamps to [-s, s] and divides
by ``s`` when ``s > 1``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from radardiff import _stop
from radardiff.config.schema import RunConfig
from radardiff.diffusion.schedule import Schedule, signal_noise
from radardiff.errors import ConfigError
from radardiff.models import log_range_moments, pack_conditions, range_embedding_value

if TYPE_CHECKING:
    from radardiff.models.run import LoadedRun

ClipMode = Literal["none", "static", "dynamic"]
CLIP_MODES = ("none", "static", "dynamic")
# normalisations that put every sample into [-1, 1] (or [0, 1]): their x0 estimates are clipped
BOUNDED = ("minmax_pm1", "minmax_01", "global_minmax")


def default_clip(cfg: RunConfig, normalizer) -> str:
    """``static`` when the run's normalisation bounds the data to [-1, 1] (per-sample or global
    min-max, wrapped phase), ``none`` otherwise and for super-resolution, whose target lives in
    the condition's frame, past +-1."""
    if cfg.model.superres_low_size:
        return "none"
    return "static" if normalizer.phase or normalizer.method in BOUNDED else "none"


def _shaped(abar: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """abar as (B, 1, 1, ...) (or a scalar) in the computing dtype of ``like``."""
    dtype = torch.promote_types(like.dtype, torch.float32)
    a = abar.to(dtype)
    return a.reshape(-1, *([1] * (like.ndim - 1))) if a.ndim else a


def x0_and_eps(
    out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, prediction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from the network's mean output ``out`` in parameterisation ``prediction``
    (``eps``, ``v`` or ``x0``) at noise level ``abar`` (scalar or one per sample)."""
    sa, sb = signal_noise(_shaped(abar, x_t))
    if prediction == "eps":
        return (x_t - sb * out) / sa, out
    if prediction == "v":
        return sa * x_t - sb * out, sa * out + sb * x_t
    if prediction == "x0":
        return out, (x_t - sa * out) / sb
    raise ConfigError(f"diffusion.prediction = '{prediction}': unknown")


def eps_from_x0(x0: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    sa, sb = signal_noise(_shaped(abar, x_t))
    return (x_t - sa * x0) / sb


def clip_x0(x0: torch.Tensor, mode: str, percentile: float = 0.995) -> torch.Tensor:
    """``x0`` clipped by ``mode`` (see the module docstring); ``none`` returns it as it is."""
    if mode == "none":
        return x0
    if mode == "static":
        return x0.clamp(-1.0, 1.0)
    if mode == "dynamic":
        flat = x0.detach().abs().reshape(x0.shape[0], -1).float()
        s = torch.quantile(flat, percentile, dim=1).clamp_min(1.0).to(x0.dtype)
        s = s.reshape(-1, *([1] * (x0.ndim - 1)))
        return torch.maximum(torch.minimum(x0, s), -s) / s
    raise ConfigError(f"x0 clipping '{mode}': unknown; use one of {', '.join(CLIP_MODES)}")


@dataclass
class DenoiserOutput:
    """What the network says about ``x_t`` at one noise level.

    ``x0`` and ``eps`` are coherent (``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps``, also after
    clipping); ``var`` holds the raw learned-range variance channels (None when the variance is
    fixed); ``abar`` is (B, 1, 1, ...) or a scalar.
    """

    x0: torch.Tensor
    eps: torch.Tensor
    abar: torch.Tensor
    var: torch.Tensor | None = None

    @property
    def v(self) -> torch.Tensor:
        sa, sb = signal_noise(_shaped(self.abar, self.x0))
        return sa * self.eps - sb * self.x0


@dataclass
class Conditioning:
    """The network's conditioning inputs for a batch: ``labels`` go to its ``class_labels``
    slot (class indices, or the scalar of range / super-resolution conditioning), ``extra``
    channels are concatenated to ``x_t`` (the upsampled low-resolution image), then ``maps``
    (the encoded map planes, :class:`radardiff.data.maps.MapEncoder`; all 0 for no map)."""

    labels: torch.Tensor | None = None
    extra: torch.Tensor | None = None
    maps: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Conditioning:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Conditioning(move(self.labels), move(self.extra), move(self.maps))

    def planes(self) -> torch.Tensor | None:
        """What is concatenated to ``x_t``: the low-resolution image, then the maps."""
        parts = [p for p in (self.extra, self.maps) if p is not None]
        return None if not parts else parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


NONE = Conditioning()


class Denoiser:
    """A run's network as a denoiser (see the module docstring).

    Parameters
    ----------
    network : a diffusers ``UNet2DModel`` (or a module with its call signature).
    cfg : the run's config (model conditioning and diffusion process).
    data_channels : channels of x_t (the network's input without the conditioning channels).
    range_moments : mean and standard deviation of the training set's log-range (range
        conditioning), from :func:`radardiff.models.log_range_moments`.
    clip : x0 clipping, ``none``, ``static`` or ``dynamic``.
    percentile : the quantile of dynamic clipping.
    guidance : classifier-free guidance scale w on the mean channels, ``out_null + w (out_class -
        out_null)`` (Ho and Salimans 2022); 1 is plain conditional sampling.
    precision : ``no``, ``bf16`` or ``fp16`` autocast around the network (sampling; training
        gets its autocast from accelerate).
    channels_last : give the network its input in channels-last memory format.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        cfg: RunConfig,
        data_channels: int,
        *,
        range_moments: tuple[float, float] | None = None,
        clip: str = "none",
        percentile: float = 0.995,
        guidance: float = 1.0,
        precision: str = "no",
        channels_last: bool = False,
        schedule: Schedule | None = None,
    ) -> None:
        if clip not in CLIP_MODES:
            raise ConfigError(f"x0 clipping '{clip}': unknown; use one of {', '.join(CLIP_MODES)}")
        if not 0.5 <= percentile <= 1.0:
            raise ConfigError(f"dynamic clipping percentile must be in [0.5, 1], got {percentile}")
        if cfg.model.range_conditioning and range_moments is None:
            raise ConfigError("a range-conditioned denoiser needs the training set's range moments")
        self.network = network
        self.cfg = cfg
        self.data_channels = data_channels
        self.schedule = schedule or Schedule(cfg.diffusion)
        self.prediction = cfg.diffusion.prediction
        self.learned_variance = cfg.diffusion.variance == "learned_range"
        self.range_moments = range_moments
        self.clip = clip
        self.percentile = percentile
        self.guidance = float(guidance)
        self.precision = precision
        self.channels_last = channels_last

    @classmethod
    def from_run(cls, run: LoadedRun, **options) -> Denoiser:
        """The denoiser of a loaded run (its EMA network unless the run was loaded otherwise)."""
        moments = None
        if run.cfg.model.range_conditioning:
            moments = log_range_moments(torch.as_tensor(run.normalizer.sample_stats))
        return cls(run.model, run.cfg, run.data_channels, range_moments=moments, **options)

    def with_options(self, network: torch.nn.Module | None = None, **options) -> Denoiser:
        """The same denoiser with another network (an EMA copy) or other clip / guidance /
        precision settings."""
        keep = {
            "range_moments": self.range_moments,
            "clip": self.clip,
            "percentile": self.percentile,
            "guidance": self.guidance,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "schedule": self.schedule,
        }
        net = self.network if network is None else network
        return Denoiser(net, self.cfg, self.data_channels, **{**keep, **options})

    # ---- conditioning ------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    def condition(
        self,
        classes: torch.Tensor | None = None,
        *,
        drop: torch.Tensor | None = None,
        stats: torch.Tensor | None = None,
        low: torch.Tensor | None = None,
        level: torch.Tensor | None = None,
        maps: torch.Tensor | None = None,
        drop_maps: torch.Tensor | None = None,
    ) -> Conditioning:
        """The network's conditioning for a batch, from what it means.

        ``classes``: class indices; ``drop`` (bool, optional) replaces them by the null class of
        classifier-free guidance. ``stats``: per-sample min-max statistics (B, C, 2) of a
        range-conditioned run. ``low``: the super-resolution condition, upsampled and framed
        (B, C, H, W), already noised to ``level`` (B,), the noise-augmentation step. ``maps``:
        the encoded map planes of a map-conditioned run; ``drop_maps`` (bool, optional) sets
        those samples' planes to 0, the "no map" of classifier-free guidance.
        """
        base = self._embedding_condition(classes, drop, stats, low, level)
        if not self.cfg.model.maps:
            return base
        if maps is None:
            raise ConfigError(
                f"the run is conditioned on maps ({', '.join(self.cfg.model.maps)}): give each "
                "sample's map"
            )
        if drop_maps is not None:
            maps = torch.where(drop_maps.view(-1, 1, 1, 1), torch.zeros_like(maps), maps)
        return Conditioning(base.labels, base.extra, maps)

    def _embedding_condition(self, classes, drop, stats, low, level) -> Conditioning:
        m = self.cfg.model
        value = None
        if m.range_conditioning:
            if stats is None:
                raise ConfigError("the run is range-conditioned: give each sample's statistics")
            value = range_embedding_value(stats, *self.range_moments).float()
        if m.num_classes:
            if classes is None:
                raise ConfigError("the run is class-conditional: give the class of every sample")
            labels = classes.long()
            if drop is not None:
                labels = torch.where(drop, torch.full_like(labels, m.num_classes), labels)
            if value is not None:  # both share one embedding (models.conditioning)
                return Conditioning(labels=pack_conditions(labels, value.to(labels.device)))
            return Conditioning(labels=labels)
        if value is not None:
            return Conditioning(labels=value)
        if m.superres_low_size:
            if low is None or level is None:
                raise ConfigError("the run is a super-resolution run: give the low-res condition")
            return Conditioning(labels=level.float(), extra=low)
        return NONE

    # ---- network calls ------------------------------------------------------------------------

    def _autocast(self, device: torch.device):
        if self.precision == "no":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)

    def network_output(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning = NONE
    ) -> torch.Tensor:
        """The raw network output (B, C or 2C with a learned variance, H, W) at trained timesteps
        ``t`` (a scalar or one per sample, fractional allowed), without guidance or clipping.
        Each call is a stop point (:func:`radardiff._stop.check`): a long sampler run or
        training step stops at its next network call."""
        _stop.check()
        tt = torch.as_tensor(t, device=x_t.device)
        if tt.is_floating_point():
            tt = tt.float()  # the timestep embedding works in float32
        if tt.ndim == 0:
            tt = tt.expand(x_t.shape[0])
        planes = cond.planes()
        inp = x_t if planes is None else torch.cat([x_t, planes.to(x_t.dtype)], dim=1)
        if self.channels_last and inp.ndim == 4:
            inp = inp.contiguous(memory_format=torch.channels_last)
        kwargs = {} if cond.labels is None else {"class_labels": cond.labels}
        with self._autocast(x_t.device):
            return self.network(inp, tt, **kwargs).sample

    def guided_output(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning = NONE
    ) -> torch.Tensor:
        """:meth:`network_output` with classifier-free guidance on the mean channels (one
        doubled batch: the conditional call and the null one, without class and without map),
        in float32 at least."""
        dtype = torch.promote_types(x_t.dtype, torch.float32)
        by_class = bool(self.num_classes) and cond.labels is not None
        by_map = cond.maps is not None
        if self.guidance == 1.0 or not (by_class or by_map):
            return self.network_output(x_t, t, cond).to(dtype)
        tt = torch.as_tensor(t, device=x_t.device)
        tt = tt.expand(x_t.shape[0]) if tt.ndim == 0 else tt
        twice = lambda a, b: None if a is None else torch.cat([a, b])  # noqa: E731
        null_labels = self._null_labels(cond.labels) if by_class else cond.labels
        both = Conditioning(
            labels=twice(cond.labels, null_labels),
            extra=twice(cond.extra, cond.extra),
            maps=twice(cond.maps, torch.zeros_like(cond.maps) if by_map else None),
        )
        out = self.network_output(torch.cat([x_t, x_t]), torch.cat([tt, tt]), both).to(dtype)
        c = self.data_channels
        on, off = out.chunk(2)
        mean = off[:, :c] + self.guidance * (on[:, :c] - off[:, :c])
        return torch.cat([mean, on[:, c:]], dim=1)

    def _null_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The null class in place of every class; a range packed beside it stays
        (:func:`radardiff.models.pack_conditions`: the class is column 0)."""
        if labels.ndim == 1:
            return torch.full_like(labels, self.num_classes)
        null = labels.clone()
        null[:, 0] = self.num_classes
        return null

    def __call__(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning = NONE
    ) -> DenoiserOutput:
        """x0, eps (and v) of ``x_t`` at trained timesteps ``t``, guided and clipped."""
        out = self.guided_output(x_t, t, cond)
        c = self.data_channels
        abar = self.schedule.abar_at_tensor(torch.as_tensor(t, device=x_t.device))
        x_t = x_t.to(out.dtype)
        x0, eps = x0_and_eps(out[:, :c], x_t, abar, self.prediction)
        if self.clip != "none":
            x0 = clip_x0(x0, self.clip, self.percentile)
            eps = eps_from_x0(x0, x_t, abar)
        var = out[:, c:] if self.learned_variance else None
        return DenoiserOutput(x0=x0, eps=eps, abar=_shaped(abar, x_t), var=var)

    def bind(self, cond: Conditioning = NONE):
        """``fn(x_t, t) -> DenoiserOutput`` with ``cond`` fixed: what a sampler calls."""

        @torch.inference_mode()
        def fn(x_t: torch.Tensor, t: torch.Tensor) -> DenoiserOutput:
            return self(x_t, t, cond)

        return fn
