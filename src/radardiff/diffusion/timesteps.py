"""Timestep samplers: uniform and loss-second-moment importance sampling.

Loss-second-moment (Nichol and Dhariwal 2021, sec. 3.3): ``p_t ~ sqrt(E[L_t^2])`` over the last
``history`` losses seen at each t, mixed with a little of the uniform distribution; each loss
is weighted by ``1 / (T p_t)`` so the estimator of the objective stays unbiased. Until every t has
a full history the sampler is uniform. Losses of all processes are gathered by the caller and
passed to :meth:`update` (this module does no distributed calls).
"""

from __future__ import annotations

import numpy as np
import torch

from radardiff.errors import ConfigError


class UniformSampler:
    """``p_t = 1/T``; every importance weight is 1."""

    kind = "uniform"
    #: whether :meth:`update` needs every step's losses (the training loop then copies them to
    #: the host each step; otherwise it copies them only when it logs)
    uses_losses = False

    def __init__(self, T: int) -> None:
        if T < 1:
            raise ConfigError(f"diffusion.timesteps = {T}: must be at least 1")
        self.T = T

    def weights(self) -> np.ndarray:
        return np.full(self.T, 1.0 / self.T)

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps (B,) and the importance weights (B,) that keep the loss unbiased."""
        p = torch.as_tensor(self.weights(), dtype=torch.float64, device=generator.device)
        t = torch.multinomial(p, batch, replacement=True, generator=generator)
        w = 1.0 / (self.T * p[t])
        return t.cpu(), w.float().cpu()

    def update(self, t: np.ndarray, losses: np.ndarray) -> None:
        """Uniform sampling learns nothing from losses."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore (a loss-second-moment history, if any, is ignored)."""


class LossSecondMomentSampler(UniformSampler):
    """Importance sampling with ``p_t ~ sqrt(mean of the last `history` L_t^2)``.

    ``p = (1 - uniform_prob) sqrt(E[L_t^2]) / sum_s sqrt(E[L_s^2]) + uniform_prob / T`` once every
    t has ``history`` losses, uniform before (Nichol and Dhariwal 2021, eq. 18; defaults history
    10, uniform_prob 0.001 as improved-diffusion). The history is a float64 ring per t, saved and
    restored exactly by :meth:`state_dict` / :meth:`load_state_dict` (plain lists of floats, safe
    in JSON: Python floats round-trip float64 exactly).
    """

    kind = "loss_second_moment"
    uses_losses = True

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(T)
        if history < 1 or not 0.0 <= uniform_prob <= 1.0:
            raise ConfigError("loss-second-moment sampler: history >= 1, 0 <= uniform_prob <= 1")
        self.history, self.uniform_prob = history, uniform_prob
        self.losses = np.zeros((T, history), dtype=np.float64)
        self.counts = np.zeros(T, dtype=np.int64)

    def warmed_up(self) -> bool:
        return bool((self.counts == self.history).all())

    def weights(self) -> np.ndarray:
        if not self.warmed_up():
            return np.full(self.T, 1.0 / self.T)
        w = np.sqrt(np.mean(self.losses**2, axis=-1))
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / self.T

    def update(self, t: np.ndarray, losses: np.ndarray) -> None:
        """Push the per-sample losses (gathered from all processes, same order on every rank)."""
        t, losses = np.asarray(t, dtype=np.int64).ravel(), np.asarray(losses, np.float64).ravel()
        if t.shape != losses.shape:
            raise ValueError(f"update: {t.size} timesteps but {losses.size} losses")
        if t.size and (t.min() < 0 or t.max() >= self.T):
            raise ValueError(f"update: timesteps outside [0, {self.T - 1}]")
        for ti, loss in zip(t.tolist(), losses.tolist(), strict=True):
            if self.counts[ti] == self.history:
                self.losses[ti, :-1] = self.losses[ti, 1:]
                self.losses[ti, -1] = loss
            else:
                self.losses[ti, self.counts[ti]] = loss
                self.counts[ti] += 1

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "T": self.T,
            "history": self.history,
            "uniform_prob": self.uniform_prob,
            "losses": self.losses.tolist(),
            "counts": self.counts.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a history; an empty state (e.g. from a uniform run) starts a fresh one.

        Raises
        ------
        ConfigError
            The saved history is for another T or history length.
        """
        if not state:
            return
        losses = np.asarray(state["losses"], dtype=np.float64)
        counts = np.asarray(state["counts"], dtype=np.int64)
        if losses.shape != (self.T, self.history) or counts.shape != (self.T,):
            raise ConfigError(
                f"timestep sampler state: history of shape {losses.shape} does not fit "
                f"T = {self.T} with {self.history} losses per step"
            )
        if (counts < 0).any() or (counts > self.history).any():
            raise ConfigError("timestep sampler state: counts outside [0, history]")
        self.losses, self.counts = losses, counts


def make_timestep_sampler(name: str, T: int) -> UniformSampler:
    """``uniform`` or ``loss_second_moment`` (``diffusion.timestep_sampler``)."""
    if name == "uniform":
        return UniformSampler(T)
    if name == "loss_second_moment":
        return LossSecondMomentSampler(T)
    raise ConfigError(
        f"diffusion.timestep_sampler = '{name}': unknown; use 'uniform' or 'loss_second_moment'"
    )
