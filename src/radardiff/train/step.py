"""One training step: a batch, its noise and timesteps, the conditioned network call, the loss.

The training step and validation share :func:`loss_terms`; both call the network through the
run's :class:`radardiff.diffusion.Denoiser`, as sampling and likelihood do.
"""

from __future__ import annotations

import torch

from radardiff.config import RunConfig
from radardiff.diffusion import Conditioning, Denoiser, GaussianDiffusion, LossTerms
from radardiff.models import superres_pair


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``; on a GPU through pinned memory and a non-blocking copy, so the
    host does not wait for the GPU's queued work (a pageable copy synchronises the stream)."""
    if device.type != "cuda":
        return x.to(device)
    if not x.is_pinned():
        x = x.pin_memory()
    return x.to(device, non_blocking=True)


def target_and_condition(
    cfg: RunConfig, x0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The diffusion target and, for super-resolution, its low-resolution condition (both in the
    condition's frame, see :func:`radardiff.models.superres_pair`)."""
    if not cfg.model.superres_low_size:
        return x0, None
    return superres_pair(x0, cfg.model.superres_low_size)


def batch_conditioning(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    batch: dict[str, torch.Tensor],
    gen: torch.Generator,
    noise_gen: torch.Generator | None = None,
    low: torch.Tensor | None = None,
    drop_labels: bool = True,
) -> Conditioning:
    """The conditioning of one batch, with the training draws.

    Class labels are dropped to the null class with probability ``class_dropout`` (classifier-free
    guidance; not when ``drop_labels`` is false, as in validation). Super-resolution: ``low``, the
    upsampled low-resolution condition from :func:`target_and_condition`, is noised to a random
    level s <= ``superres_aug_max`` (noise augmentation, Ho et al. 2022, cascaded diffusion); s is
    the network's conditioning scalar. Range conditioning (with or without classes): the batch's
    per-sample statistics.
    Maps (any of the above may have them): the batch's encoded maps, each dropped to "no map"
    with probability ``map_dropout`` (drawn after the labels' dropout).
    """
    m = denoiser.cfg.model
    device = diffusion.betas.device
    noise_gen = noise_gen or gen
    kw: dict[str, torch.Tensor | None] = {}
    if m.num_classes:
        labels = to_device(batch["label"], device)
        drop = None
        if drop_labels:
            drop = to_device(torch.rand(labels.shape, generator=gen), device) < m.class_dropout
        kw.update(classes=labels, drop=drop)
    elif m.superres_low_size:
        s = to_device(
            torch.randint(0, m.superres_aug_max + 1, (low.shape[0],), generator=gen), device
        )
        noise = torch.randn(low.shape, generator=noise_gen, device=noise_gen.device).to(device)
        noised = torch.where((s > 0).view(-1, 1, 1, 1), diffusion.q_sample(low, s, noise), low)
        kw.update(low=noised, level=s)
    if m.range_conditioning:  # alone or beside class labels
        kw.update(stats=to_device(batch["stats"], device))
    if m.maps:
        maps = to_device(batch["maps"], device)
        drop_maps = None
        if drop_labels:
            drop_maps = to_device(torch.rand(maps.shape[0], generator=gen), device) < m.map_dropout
        kw.update(maps=maps, drop_maps=drop_maps)
    return denoiser.condition(**kw)


def loss_terms(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    batch: dict[str, torch.Tensor],
    t: torch.Tensor,
    gen: torch.Generator,
    noise_gen: torch.Generator | None = None,
    *,
    drop_labels: bool = True,
    with_vlb: bool = False,
) -> LossTerms:
    """Per-sample loss terms of one batch at timesteps ``t`` (on the device).

    The Gaussian noise comes from ``noise_gen`` (default ``gen``; it may live on the GPU), label
    dropout and the super-resolution noise level from ``gen``.
    """
    device = t.device
    noise_gen = noise_gen or gen
    x0, low = target_and_condition(denoiser.cfg, to_device(batch["image"], device))
    mask = to_device(batch["mask"], device)
    noise = torch.randn(x0.shape, generator=noise_gen, device=noise_gen.device).to(device)
    x_t = diffusion.q_sample(x0, t, noise)
    cond = batch_conditioning(denoiser, diffusion, batch, gen, noise_gen, low, drop_labels)
    out = denoiser.network_output(x_t, t, cond)
    return diffusion.training_losses(out, x0, x_t, t, noise, mask, with_vlb=with_vlb)


def train_step(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    ts_sampler,
    batch: dict[str, torch.Tensor],
    gen: torch.Generator,
    device: torch.device,
    noise_gen: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass and the loss: returns (scalar loss, per-sample loss, timesteps).

    Timesteps and label dropout are drawn from ``gen`` (host); the Gaussian noise from
    ``noise_gen`` (default ``gen``), which may live on the GPU.
    """
    t, w = ts_sampler.sample(batch["image"].shape[0], gen)
    t, w = to_device(t, device), to_device(w, device)
    terms = loss_terms(denoiser, diffusion, batch, t, gen, noise_gen)
    return (terms.loss * w).mean(), terms.loss.detach(), t
