"""Exponential moving averages of the weights, defined by half-lives in images seen.

After ``n`` more images the old weights count for ``0.5 ** (n / halflife)``: the decay per step is
``beta = 0.5 ** (batch_images / halflife_images)``, independent of batch size and process count
(Karras et al. 2022, appendix). With warm-up the half-life is at most ``ratio * images_seen``, so
the average forgets the random initialisation quickly early in training.
"""

from __future__ import annotations

import copy

import torch


class EMA:
    def __init__(
        self, model: torch.nn.Module, halflives_kimg: tuple[float, ...], warmup_ratio: float
    ):
        self.halflives = [h * 1000.0 for h in halflives_kimg]
        self.warmup_ratio = warmup_ratio
        self.models = [self._frozen_copy(model) for _ in self.halflives]
        self._pairs: tuple[torch.nn.Module, list, list, list] | None = None

    @staticmethod
    def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
        ema = copy.deepcopy(model).float().eval()
        ema.requires_grad_(False)
        return ema

    def capped(self, images_total: float) -> list[float]:
        """The half-lives (kimg) that the warm-up still shortens when ``images_total`` images
        have been seen: they end at ``warmup_ratio * images_total``, and any two of them are
        then the same average."""
        if self.warmup_ratio <= 0:
            return []
        cap = self.warmup_ratio * images_total
        return [h / 1000.0 for h in self.halflives if h > cap]

    def beta(self, halflife: float, images_seen: float, batch_images: int) -> float:
        if self.warmup_ratio > 0:
            halflife = min(halflife, self.warmup_ratio * images_seen)
        return 0.5 ** (batch_images / max(halflife, 1e-8))

    def _tensors(self, model: torch.nn.Module) -> tuple[list, list, list]:
        """(source parameters, per-EMA parameter lists, per-EMA (ema, source) buffer pairs),
        gathered once per source model: walking the module tree every step costs host time
        that a GPU spends idle."""
        if self._pairs is None or self._pairs[0] is not model:
            src = [p.detach() for p in model.parameters()]
            dst = [list(ema.parameters()) for ema in self.models]
            bufs = [list(zip(ema.buffers(), model.buffers(), strict=True)) for ema in self.models]
            self._pairs = (model, src, dst, bufs)
        return self._pairs[1:]

    @torch.no_grad()
    def update(self, model: torch.nn.Module, images_seen: float, batch_images: int) -> None:
        src, dsts, bufs = self._tensors(model)
        src32 = src if all(p.dtype == torch.float32 for p in src) else [p.float() for p in src]
        for halflife, dst, pairs in zip(self.halflives, dsts, bufs, strict=True):
            beta = self.beta(halflife, images_seen, batch_images)
            torch._foreach_lerp_(dst, src32, 1.0 - beta)
            for b_ema, b in pairs:
                b_ema.copy_(b)

    @property
    def primary(self) -> torch.nn.Module:
        """The EMA used for validation and sampling (the first half-life)."""
        return self.models[0]
