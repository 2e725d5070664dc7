"""Device choice for sampling: the process's GPU under torchrun/accelerate, else CUDA, else CPU;
and the batch size the device takes (``--batch-size auto``)."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch


def pick_device() -> torch.device:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        return PartialState(cpu=not torch.cuda.is_available()).device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


AUTO_BATCH = "auto"
# On a CPU a bigger batch does not go faster: past a few dozen images the activations outgrow
# the cache and image-calls per second fall (docs/performance.md, "CPU sampling batch size")
CPU_BATCH = 64
# a batch is what an interrupted request keeps (finished batches are parts on disk) and what the
# progress bar counts, so even a GPU with room for more is given at most this many a batch
MAX_BATCH = 1024
MEMORY_FRACTION = 0.8  # of the device memory free after the probe; the rest is headroom
PROBE_BATCH = 16


def cuda_memory(device: torch.device, probe: Callable[[int], None], rows: int) -> tuple[int, int]:
    """Peak bytes one sample takes in a network call (``probe(rows)`` measured; the fixed costs
    of the call are spread over its rows, which errs on the safe side) and the bytes free for
    sampling: the driver's free memory plus what torch's allocator holds unused."""
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    probe(rows)
    torch.cuda.synchronize(device)
    per_sample = max(1, (torch.cuda.max_memory_allocated(device) - base) // rows)
    free, _ = torch.cuda.mem_get_info(device)
    held = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return per_sample, free + held


def auto_batch_size(
    device: torch.device, probe: Callable[[int], None], n_each: int
) -> tuple[int, str]:
    """The batch size of ``--batch-size auto`` for a process that makes ``n_each`` samples, and
    why: on a CUDA device as many samples as fill ``MEMORY_FRACTION`` of its free memory by a
    probed network call (at most ``MAX_BATCH``), elsewhere ``CPU_BATCH``; never more than
    ``n_each``."""
    n_each = max(1, n_each)
    if device.type != "cuda":
        b = min(CPU_BATCH, n_each)
        return b, f"auto: {device.type}, {CPU_BATCH} at most"
    per_sample, available = cuda_memory(device, probe, min(PROBE_BATCH, n_each))
    fit = int(MEMORY_FRACTION * available // per_sample)
    b = max(1, min(fit, MAX_BATCH, n_each))
    why = (
        f"auto: {available / 2**30:.1f} GiB free on {device}, {per_sample / 2**20:.1f} MiB a "
        f"sample, room for {fit}; at most {MAX_BATCH} and the {n_each} this process makes"
    )
    return b, why


def balanced(batch: int, n: int) -> int:
    """The smallest batch size that splits ``n`` samples into as many batches as ``batch`` does,
    so that the last batch is short by fewer samples than there are batches (80 at most 64 a
    batch: two of 40, not 64 and 16; a compiled network pads a short batch to the full size)."""
    batches = -(-n // max(1, batch))
    return -(-n // batches)


def agree_batch_size(batch: int, device: torch.device) -> int:
    """The smallest of every process's batch size (each has measured its own device), so that
    all processes split the request into the same batches."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return batch
    v = torch.tensor([batch], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(v, op=dist.ReduceOp.MIN)
    return int(v.item())


def agree_flag(ok: bool, device: torch.device) -> bool:
    """Whether ``ok`` holds in every process (True in a single process of its own)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ok
    v = torch.tensor([int(ok)], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(v, op=dist.ReduceOp.MIN)
    return bool(v.item())
