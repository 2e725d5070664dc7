"""The one boundary between radardiff and its acceleration unit (:mod:`radardiff.accel`).

Training, sampling and distillation never name a kernel: they describe what they want of a
network in a :class:`NetworkPolicy` (whose kernels, which precision, channels-last or not,
compiled or not) and call :func:`prepare_network`, which applies the memory format itself and asks
the acceleration unit for the rest. Without that unit (its folder deleted, or a build of
radardiff without it) the network runs on torch's kernels: ``auto`` says so in the log line, an
explicit ``radardiff`` kernel choice or a compile request is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from radardiff.errors import ConfigError

try:
    from radardiff import accel
except ImportError:  # the unit was removed: torch's kernels
    accel = None

CONV_KERNELS = ("auto", "radardiff", "torch")
MISSING = "the acceleration unit (radardiff.accel) is not installed"


@dataclass(frozen=True)
class NetworkPolicy:
    """What a caller wants of a network.

    ``kernels``: ``auto`` (radardiff's CPU kernels where they run: a CPU computing fp32 without
    torch.compile), ``radardiff`` (insist) or ``torch``; ``option`` is how the user names that
    choice (``train.conv_kernels``, ``--conv-kernels``) in messages. ``precision``: the autocast
    the network runs under (``no``, ``bf16``, ``fp16``, resolved). ``channels_last``: the
    network's weights (and the inputs its denoiser gives it) in channels-last memory format.
    ``compile``: torch.compile, in ``compile_mode`` (training: resolved with ``grad_accum`` and
    ``processes``; sampling: for a fixed batch).
    """

    kernels: str = "auto"
    option: str = "--conv-kernels"
    precision: str = "no"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "auto"
    training: bool = False
    grad_accum: int = 1
    processes: int = 1


@dataclass
class PreparedNetwork:
    """A network as :func:`prepare_network` left it, and what was done (``line``: the log line)."""

    network: nn.Module
    device: torch.device
    policy: NetworkPolicy
    kernels: bool = False
    line: str = ""
    compile_mode: str | None = None
    cuda_graphs: bool = False
    _acceleration: object = field(default=None, repr=False)

    def compiled(self, module: nn.Module | None = None, cache: dict | None = None) -> nn.Module:
        """What to call: ``module`` (default the network; training passes its DDP wrapper)
        compiled when the policy asks for it, else ``module`` itself. Sampling networks are
        compiled once per ``cache`` (a loaded run's)."""
        module = self.network if module is None else module
        if not self.policy.compile:
            return module
        if self.policy.training:
            return accel.compile_for_training(module, self.device, self.compile_mode)
        return accel.compile_for_sampling(module, {} if cache is None else cache)

    def follow(self, other: nn.Module) -> nn.Module:
        """Put a network that runs beside this one without gradients (an EMA copy, a
        distillation teacher) on the same kernels; returns it."""
        if accel is not None and self._acceleration is not None:
            accel.follow(other, self._acceleration)
        return other


def prepare_network(
    network: nn.Module, device: torch.device | str, policy: NetworkPolicy
) -> PreparedNetwork:
    """Apply ``policy`` to ``network`` (in place: memory format, kernels) and say what was done.
    A policy the machine cannot serve is refused in one line before any work."""
    device = torch.device(device)
    tune_process()  # before the loop that will run the network, not at every command's start
    if policy.kernels not in CONV_KERNELS:
        raise ConfigError(
            f"{policy.option}: one of {', '.join(CONV_KERNELS)}, got '{policy.kernels}'"
        )
    if policy.channels_last:
        network.to(memory_format=torch.channels_last)
    if accel is None:
        return _without_unit(network, device, policy)
    done = accel.prepare(
        network, device, kernels=policy.kernels, option=policy.option,
        precision=policy.precision, compile=policy.compile, compile_mode=policy.compile_mode,
        training=policy.training, grad_accum=policy.grad_accum, processes=policy.processes,
    )  # fmt: skip
    return PreparedNetwork(
        network, device, policy, kernels=done.kernels, line=done.line,
        compile_mode=done.compile_mode, cuda_graphs=done.cuda_graphs, _acceleration=done,
    )  # fmt: skip


def _without_unit(network: nn.Module, device: torch.device, policy: NetworkPolicy):
    if policy.kernels == "radardiff":
        raise ConfigError(f"{policy.option} = radardiff cannot run: {MISSING}; use auto or torch")
    if policy.compile:
        raise ConfigError(f"torch.compile (--compile, train.compile) needs what {MISSING}")
    line = f"convolutions: torch's ({policy.option} = {policy.kernels}; {MISSING})"
    return PreparedNetwork(network, device, policy, line=line)


def compiled_for_sampling(network: nn.Module, cache: dict) -> nn.Module:
    """The compiled form of ``network`` that sampling with ``compile`` calls (made once per
    ``cache``, a loaded run's): the same object :meth:`PreparedNetwork.compiled` returns."""
    if accel is None:
        raise ConfigError(f"torch.compile (--compile, train.compile) needs what {MISSING}")
    return accel.compile_for_sampling(network, cache)


def release_network(network: nn.Module) -> None:
    """Drop what the acceleration keeps for ``network`` between calls (transformed weights),
    before its weights change."""
    if accel is not None:
        accel.release(network)


def tune_process() -> None:
    """Process-wide settings for fast training and sampling (none without the unit)."""
    if accel is not None:
        accel.tune_process()
