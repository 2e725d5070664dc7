"""A network compiled once, by ``torch.compile``, for a fixed-shape sampling loop.

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
"""

from __future__ import annotations

import logging
import time
import weakref

import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

log = logging.getLogger("radardiff")

BACKEND: str | object = "inductor"  # torch.compile's backend (tests count graphs with their own)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def default_compile_mode(device: torch.device) -> str:
    """CUDA graphs where there is CUDA (small networks are launch-bound there), else inductor's
    default (fused elementwise kernels, oneDNN convolutions on a CPU)."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def _pad_rows(v: torch.Tensor, rows: int) -> torch.Tensor:
    if rows == 0:
        return v
    pad = v[-1:].expand(rows, *v.shape[1:])
    out = torch.cat([v, pad])
    if v.ndim == 4 and v.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def _uniform(v: torch.Tensor) -> torch.Tensor:
    """``v`` as an inference tensor under inference mode: a graph compiled for one kind of tensor
    is compiled again for the other (a dispatch-key guard), and a sampler's inputs are of both
    kinds (made outside the network call, or inside it by a layout change)."""
    if torch.is_inference_mode_enabled() and not v.is_inference():
        return v.clone()
    return v


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
        self.mode = mode or default_compile_mode(device)
        if self.mode not in COMPILE_MODES:
            raise ValueError(f"compile mode '{self.mode}': use one of {', '.join(COMPILE_MODES)}")
        self.network = network
        self.compiled = torch.compile(
            network, mode=self.mode, backend=backend or BACKEND, dynamic=False
        )
        self.cuda_graphs = device.type == "cuda" and self.mode == "reduce-overhead"
        self.batch: int | None = None
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
            started = time.perf_counter()
        b, outs = self.batch, []
        for s in range(0, sample.shape[0], b):
            rows = min(b, sample.shape[0] - s)
            pad = b - rows
            part = [_uniform(_pad_rows(v[s : s + rows], pad)) for v in (sample, t)]
            labels = None
            if class_labels is not None:
                labels = _uniform(_pad_rows(class_labels[s : s + rows], pad))
            y = self._run(*part, labels)[:rows]
            outs.append(y.clone() if self.cuda_graphs or pad else y)
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


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_network(network: torch.nn.Module, mode: str | None = None) -> FixedBatchNetwork:
    """The :class:`FixedBatchNetwork` of ``network`` in ``mode``, made once per process and
    reused by every later request on the same network (a study's samplers, a cascade's second
    run), so that each network and batch size compiles once."""
    device = next(network.parameters()).device
    mode = mode or default_compile_mode(device)
    per_network = _CACHE.setdefault(network, {})
    if mode not in per_network:
        per_network[mode] = FixedBatchNetwork(network, mode)
    return per_network[mode]
