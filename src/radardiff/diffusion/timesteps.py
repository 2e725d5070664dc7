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


class UniformSampler:
    def __init__(self, T: int) -> None:
        self.T = T

    def weights(self) -> np.ndarray:
        return np.full(self.T, 1.0 / self.T)

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps (B,) and the importance weights (B,) that keep the loss unbiased."""
        p = torch.as_tensor(self.weights(), dtype=torch.float64)
        t = torch.multinomial(p, batch, replacement=True, generator=generator)
        w = 1.0 / (self.T * p[t])
        return t, w.float()

    def update(self, t: np.ndarray, losses: np.ndarray) -> None:
        """Uniform sampling learns nothing from losses."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class LossSecondMomentSampler(UniformSampler):
    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(T)
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
        for ti, loss in zip(np.asarray(t).tolist(), np.asarray(losses).tolist(), strict=True):
            if self.counts[ti] == self.history:
                self.losses[ti, :-1] = self.losses[ti, 1:]
                self.losses[ti, -1] = loss
            else:
                self.losses[ti, self.counts[ti]] = loss
                self.counts[ti] += 1

    def state_dict(self) -> dict:
        return {"losses": self.losses.tolist(), "counts": self.counts.tolist()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.losses = np.asarray(state["losses"], dtype=np.float64)
            self.counts = np.asarray(state["counts"], dtype=np.int64)


def make_timestep_sampler(name: str, T: int) -> UniformSampler:
    return LossSecondMomentSampler(T) if name == "loss_second_moment" else UniformSampler(T)
