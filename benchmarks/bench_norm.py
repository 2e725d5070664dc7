"""The fused group norm + SiLU kernel against torch's, in one process: per layer, then whole steps.

Per layer: group norm, the time embedding's scale and shift, SiLU, forward and backward (and
forward alone in inference mode), torch's operations against ``radardiff.accel.modules.group_norm_act``, on the
32 px recipe's shapes (batch 32), NCHW and channels-last; the best of ``--reps`` each.

Whole steps (``--pairs N``, N > 0): the 32 px recipe (``configs/insar_noise_32.toml``) on
radardiff's convolution and dropout kernels, training steps (batch 32, AdamW) and channels-last
sampling calls (inference mode), alternating the residual blocks' fused path with torch's group
norm and SiLU (the fused residual blocks installed or not), N pairs each, the order flipped every
pair; glibc's malloc tuned as the CLI does. Prints the ratio of the medians and of the sums.

Usage::

    python benchmarks/bench_norm.py                 # per layer only (about a minute)
    python benchmarks/bench_norm.py --pairs 4       # + whole steps (a few minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from radardiff.accel import library, modules
from radardiff.accel.malloc import tune_malloc

REPO = Path(__file__).resolve().parents[1]
SHAPES = [(32, 128, 32, 32), (32, 256, 16, 16), (32, 256, 8, 8), (32, 512, 16, 16)]


def best(f, reps: int) -> float:
    f()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def layer_times(shape, layout, reps: int) -> tuple[float, float, float, float]:
    """Training (forward + backward) and inference times, torch's then the kernel's."""
    n, c = shape[:2]
    norm = torch.nn.GroupNorm(32, c)
    scale = (torch.randn(n, c, 1, 1) * 0.3).requires_grad_()
    shift = torch.randn(n, c, 1, 1).requires_grad_()
    x = torch.randn(shape).contiguous(memory_format=layout).requires_grad_()
    g = torch.randn_like(x)

    def theirs():
        return F.silu(norm(x) * (1 + scale) + shift)

    def ours():
        return modules.group_norm_act(x, norm, scale, shift)

    def inference(f):
        with torch.inference_mode():
            f()

    return (
        best(lambda: theirs().backward(g), reps),
        best(lambda: ours().backward(g), reps),
        best(lambda: inference(theirs), reps),
        best(lambda: inference(ours), reps),
    )


def per_layer(reps: int) -> list[dict]:
    print(f"per layer (ms, best of {reps}): torch / kernel, training (fwd+bwd) | inference")
    rows = []
    for shape in SHAPES:
        for layout in (torch.contiguous_format, torch.channels_last):
            t, k, ti, ki = layer_times(shape, layout, reps)
            name = "nchw" if layout == torch.contiguous_format else "channels_last"
            print(
                f"  {str(shape):20s} {name:13s} {t * 1e3:7.1f} / {k * 1e3:6.1f} ({t / k:.2f}x)"
                f" | {ti * 1e3:6.1f} / {ki * 1e3:6.1f} ({ti / ki:.2f}x)"
            )
            rows.append({"shape": list(shape), "layout": name,
                         "train_ms": [round(t * 1e3, 2), round(k * 1e3, 2)],
                         "inference_ms": [round(ti * 1e3, 2), round(ki * 1e3, 2)]})  # fmt: skip
    return rows


def _fuse_blocks(net: torch.nn.Module, fused: bool) -> None:
    """The residual blocks of ``net`` with their group norms and SiLUs fused, or diffusers' own
    (the convolutions stay on the kernels either way)."""
    from diffusers.models.resnet import ResnetBlock2D

    for m in net.modules():
        if fused and modules.eligible_block(m):
            m.__class__ = modules.FusedResnetBlock2D
        elif not fused and type(m) is modules.FusedResnetBlock2D:
            m.__class__ = ResnetBlock2D


def whole_steps(pairs: int) -> dict:
    from radardiff.config.io import load_config
    from radardiff.models.unet import build_unet

    cfg = load_config(REPO / "configs" / "insar_noise_32.toml", [])
    out = {}
    for kind in ("train", "sample"):
        torch.manual_seed(0)
        net = build_unet(cfg.model, 1, False)
        x = torch.randn(32, 1, 32, 32)
        t = torch.randint(0, 1000, (32,))
        if kind == "sample":
            net = net.eval().to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        modules.install(net)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

        def step(net=net, x=x, t=t, opt=opt, kind=kind) -> None:
            if kind == "sample":
                with torch.inference_mode():
                    net(x, t)
                return
            opt.zero_grad(set_to_none=True)
            (net(x, t).sample - x).square().mean().backward()
            opt.step()

        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(pairs + 1):  # the first pair warms up
            for fused in (True, False) if i % 2 == 0 else (False, True):
                _fuse_blocks(net, fused)
                t0 = time.perf_counter()
                step()
                if i:
                    times[fused].append(time.perf_counter() - t0)
        med = statistics.median(times[False]) / statistics.median(times[True])
        total = sum(times[False]) / sum(times[True])
        print(
            f"{kind}, 32 px recipe, batch 32: fused {statistics.median(times[True]):.2f} s, "
            f"torch's {statistics.median(times[False]):.2f} s (medians of {pairs}): "
            f"{med:.3f}x (of the sums {total:.3f}x)"
        )
        out[kind] = {"fused_median_s": round(statistics.median(times[True]), 3),
                     "torch_median_s": round(statistics.median(times[False]), 3),
                     "ratio_medians": round(med, 4), "ratio_sums": round(total, 4)}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7, help="repeats per layer measurement")
    ap.add_argument("--pairs", type=int, default=0, help="interleaved whole-step pairs (0: none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    ok, why = library.available()
    if not ok:
        raise SystemExit(f"bench_norm: the kernels cannot run here: {why}")
    tune_malloc()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.2f} at start")
    numbers = {"threads": args.threads, "reps": args.reps, "pairs": args.pairs}
    numbers["per_layer_torch_vs_kernel"] = per_layer(args.reps)
    if args.pairs:
        numbers["whole_steps_32px_batch32"] = whole_steps(args.pairs)
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    if not args.no_record:
        from _results import record

        print(f"recorded in {record('norm', numbers)}")


if __name__ == "__main__":
    main()
