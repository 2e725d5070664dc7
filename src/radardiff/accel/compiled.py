"""Networks compiled once, by ``torch.compile``: for a fixed-shape sampling loop, and for training.

A sampler calls its network with the same shapes at every step and every batch, except the last
batch of a request, which is usually smaller, and a compiled graph is specialised to its input
shapes (``dynamic=False``): a new batch size would compile again (minutes on a CPU). So
:class:`FixedBatchNetwork` fixes the batch at the first call's and runs any other batch in
chunks of that size, the last one padded with copies of its final row; the padding rows are
dropped from the output. The samples of a UNet do not interact within a batch (group norm,
attention and convolutions are per sample), so this changes nothing but floating-point rounding.

On a CUDA device the default mode is ``reduce-overhead``: inductor's kernels replayed as CUDA
graphs, which removes the per-kernel launch cost that bounds small networks; outputs are then
copied out of the graph's memory before the next replay.

Training (:func:`compiled_for_training`) needs no padding: every step's batch has the same size.
"""

from __future__ import annotations

import logging
import time
from typing import get_args

import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from radardiff.accel import modules
from radardiff.config.schema import CompileMode
from radardiff.errors import ConfigError

log = logging.getLogger("radardiff")

BACKEND: str | object = "inductor"  # torch.compile's backend (tests count graphs with their own)
COMPILE_MODES = tuple(m for m in get_args(CompileMode) if m != "auto")


def default_compile_mode(device: torch.device) -> str:
    """CUDA graphs where there is CUDA (small networks are launch-bound there), else inductor's
    default (fused elementwise kernels, oneDNN convolutions on a CPU)."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def resolve_mode(mode: str | None, device: torch.device) -> str:
    """``mode`` (None or ``auto``: :func:`default_compile_mode`), checked."""
    mode = default_compile_mode(device) if mode in (None, "auto") else mode
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode '{mode}': use one of {', '.join(COMPILE_MODES)}")
    return mode


def uses_cuda_graphs(mode: str, device: torch.device) -> bool:
    """Whether a network compiled in ``mode`` on ``device`` replays CUDA graphs: then each new
    iteration must be marked (``torch.compiler.cudagraph_mark_step_begin``) so that the graphs'
    memory of the previous one may be reused."""
    return device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")


def require_cpp_compiler(device: torch.device, backend: str | object) -> None:
    """On a CPU inductor writes C++ and compiles it: without a compiler it would fail at the
    first network call, in a long traceback, after the run was set up. Checked before, with the
    compiler search inductor itself uses (``$CXX``, else ``g++``)."""
    if device.type != "cpu" or backend != "inductor":
        return
    from torch._inductor import config, cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception:  # inductor's InvalidCxxCompiler
        names = " or ".join(c for c in config.cpp.cxx if c)
        raise ConfigError(
            f"torch.compile (--compile, train.compile) on a CPU needs a C++ compiler: {names} was "
            "not found (install g++, or set CXX)"
        ) from None


def stable_config(network: torch.nn.Module) -> None:
    """Complete a diffusers model's config dict in place as saving it would.

    diffusers' ``save_pretrained`` (every checkpoint) adds ``_class_name`` and
    ``_diffusers_version`` to the model's ``_internal_dict``, and a compiled forward is guarded on
    that dict's length: the first checkpoint made training compile again (``TORCH_LOGS=recompiles``:
    ``len(self._internal_dict) != 29``; another minute or more on a CPU). Adding them before
    compiling makes the later additions no-ops. A DDP wrapper's module is completed."""
    network = getattr(network, "module", network)
    to_json = getattr(network, "to_json_string", None)
    if callable(to_json):
        to_json()


def _compile(
    network: torch.nn.Module, device: torch.device, mode: str, backend: str | object | None
) -> torch.nn.Module:
    """``network`` compiled by torch.compile in ``mode`` (resolved) for fixed shapes
    (``dynamic=False``), once the compiler is known to be there and the config is complete.
    radardiff's kernels are taken off the network (inductor then generates its own code
    around torch's convolutions; the kernels were measured only eagerly)."""
    backend = backend or BACKEND
    require_cpp_compiler(device, backend)
    stable_config(network)
    modules.uninstall(network)
    return torch.compile(network, mode=mode, backend=backend, dynamic=False)


def _staged(v: torch.Tensor, rows: int, layout: torch.memory_format) -> torch.Tensor:
    """``v`` copied into a new tensor of ``rows`` rows in ``layout``, padded with copies of its
    last row. A graph compiled for one input is guarded on its shape, strides and kind (an
    inference tensor or not): a sampler's inputs vary in all three (a timestep expanded from a
    scalar has stride 0, a layout change makes a new tensor), and each variant would compile
    again; copies made the same way every call are one variant. The copy costs a sliver of a
    network call."""
    layout = layout if v.ndim == 4 else torch.contiguous_format
    out = torch.empty((rows, *v.shape[1:]), dtype=v.dtype, device=v.device, memory_format=layout)
    out[: v.shape[0]].copy_(v)
    if v.shape[0] < rows:
        out[v.shape[0] :].copy_(v[-1:].expand(rows - v.shape[0], *v.shape[1:]))
    return out


class FixedBatchNetwork(torch.nn.Module):
    """``network`` (a diffusers ``UNet2DModel``) compiled for one batch size.

    Called like the network (``sample``, ``timestep`` per sample, optional ``class_labels``,
    returns an object with ``.sample``). The first call fixes the batch size, compiles, and logs
    how long that call took (the compile time: the network itself runs in well under a second).
    ``backend`` is torch.compile's (default :data:`BACKEND`).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        mode: str | None = None,
        backend: str | object | None = None,
    ) -> None:
        super().__init__()
        device = next(network.parameters()).device
        self.mode = resolve_mode(mode, device)
        self.network = network
        self.compiled = _compile(network, device, self.mode, backend)
        self.cuda_graphs = uses_cuda_graphs(self.mode, device)
        self.batch: int | None = None
        self.layout = torch.contiguous_format  # of 4-D inputs, the first call's
        self.compile_seconds: float | None = None

    def _run(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None):
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        kwargs = {} if labels is None else {"class_labels": labels}
        return self.compiled(x, t, **kwargs).sample

    def forward(self, sample: torch.Tensor, timestep, class_labels=None) -> UNet2DOutput:
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t.expand(sample.shape[0])
        first = self.batch is None
        if first:
            self.batch = sample.shape[0]
            cl = (
                sample.is_contiguous(memory_format=torch.channels_last)
                and not sample.is_contiguous()
            )
            self.layout = torch.channels_last if cl else torch.contiguous_format
            started = time.perf_counter()
        b, outs = self.batch, []
        for s in range(0, sample.shape[0], b):
            rows = min(b, sample.shape[0] - s)
            x, tt = (_staged(v[s : s + rows], b, self.layout) for v in (sample, t))
            labels = None
            if class_labels is not None:
                labels = _staged(class_labels[s : s + rows], b, self.layout)
            y = self._run(x, tt, labels)[:rows]
            outs.append(y.clone() if self.cuda_graphs or rows < b else y)
        if first:
            if sample.device.type == "cuda":
                torch.cuda.synchronize(sample.device)
            self.compile_seconds = time.perf_counter() - started
            log.info(
                "torch.compile (%s): %.1f s to compile the network for batch %d (reused for every "
                "batch; other batch sizes run in chunks of %d)",
                self.mode, self.compile_seconds, b, b,
            )  # fmt: skip
        return UNet2DOutput(sample=outs[0] if len(outs) == 1 else torch.cat(outs))


def compiled_network(
    network: torch.nn.Module, cache: dict, mode: str | None = None
) -> FixedBatchNetwork:
    """The :class:`FixedBatchNetwork` of ``network`` in ``mode``, made once and kept in ``cache``
    (a run's :attr:`LoadedRun.compiled`) for every later request on it (a study's samplers, a
    cascade run again), so that a network compiles once for as long as its run is loaded."""
    key = (id(network), mode)
    if key not in cache:  # the entry holds the network, so its id is not reused meanwhile
        cache[key] = FixedBatchNetwork(network, mode)
    return cache[key]


def compiled_for_training(
    network: torch.nn.Module, device: torch.device, mode: str | None = None
) -> torch.nn.Module:
    """``network`` (a diffusers model, or the DDP wrapper of one) compiled for training in
    ``mode`` (None or ``auto``: :func:`default_compile_mode`). Compiling happens at the first
    call: forward and backward, for that batch's shapes (a training batch never changes size).
    The model's config is completed first (:func:`stable_config`) so that checkpoints do not
    compile it again."""
    return _compile(network, device, resolve_mode(mode, device), None)
