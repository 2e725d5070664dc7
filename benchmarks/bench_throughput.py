"""Throughput against the hardware: radardiff's loops, the bare diffusers loops, the machine's peaks.

One command, one process per configuration (so that one configuration's allocator state, thread
pools and caches do not colour the next), printing for training and sampling at 32 and 64 px:

* ``bare``: the plainest loop a user would write with the same network (UNet2DModel, default
  AdamW, MSE on eps; for sampling, the network called on the same inputs, autocast per call, in
  the contiguous layout);
* ``ours``: radardiff's ``Trainer`` (data file, normaliser, EMA, timestep sampler, masks,
  logging) and a prepared ``dpmsolver++`` sampler over the ``Denoiser`` (channels-last on the
  CPU, as ``radardiff sample`` runs it); with ``--compile`` also that sampler on the network
  compiled as ``radardiff sample --compile`` runs it, its compile time, and its ratio to the
  eager network timed interleaved with it in the same process, and the ``Trainer`` with
  ``train.compile`` (its first step, the compile, timed apart) between two eager ``Trainer`` runs
  in one process;
* the effective GFLOP/s of each (FLOPs of the network's convolutions and matmuls counted once by
  ``torch.utils.flop_counter``; a training step counted as 3 forwards) and their share of the
  machine's measured peak: bf16 / fp32 3x3 convolutions (a large one and the networks' main
  levels), NCHW and channels-last, the best of them (on a VM whose speed drifts the loops can
  exceed a peak probed minutes earlier: trust the ratios of one run).

Ratios are ours / bare measured in the same command; the load average is printed at the start and
the end (a loaded machine makes every number meaningless: run it alone). ``--precision auto`` (the
default) takes bf16 where the device computes it fast and fp32 elsewhere (on an AVX2-only CPU a
bf16 convolution is tens of times slower than fp32, docs/performance.md: its peak is still
measured and printed, with fewer repeats).

Usage::

    python benchmarks/bench_throughput.py                         # CPU, auto precision, 32 and 64 px
    python benchmarks/bench_throughput.py --sizes 32 --threads 2 --steps 6
    python benchmarks/bench_throughput.py --device cuda --precision fp16 --batch-scale 8
    python benchmarks/bench_throughput.py --kinds sample --compile  # + sampling compiled
    python benchmarks/bench_throughput.py --kinds train --sizes 32 --compile  # + training compiled
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from radardiff._hardware import bf16_fast, describe_cpu

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# the configurations: batch 32 at 32 px, 16 at 64 px (times --batch-scale)
BATCH = {32: 32, 64: 16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


# (channels, size) of the peak probes, batch 32: the large convolution, then the two
# levels that carry most of the networks' FLOPs (the large one's tensors outgrow the cache, so the
# networks' own levels can run faster than it: their peak is the fairer one)
PEAK_SHAPES = ((256, 32), (128, 32), (256, 16))


def conv_peak(precision: str, device: torch.device, reps: int = 8, shapes=PEAK_SHAPES) -> dict:
    """GFLOP/s of 3x3 convolutions (batch 32, C -> C channels, S x S) for each (C, S) of
    ``shapes``, NCHW and channels-last; ``gflops`` is the best of all. Fewer repeats where one call
    takes over a second (bf16 on a CPU without bf16 kernels)."""
    dtype = _dtype(precision)
    out = {}
    for c, size in shapes:
        x = torch.randn(32, c, size, size, device=device, dtype=dtype)
        w = torch.randn(c, c, 3, 3, device=device, dtype=dtype)
        flops = 2 * 32 * c * size * size * c * 9
        for layout, fmt in (
            ("nchw", torch.contiguous_format),
            ("channels_last", torch.channels_last),
        ):
            xi, wi = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
            with torch.inference_mode():
                t0 = time.perf_counter()
                torch.nn.functional.conv2d(xi, wi, padding=1)
                _sync(device)
                n = reps if time.perf_counter() - t0 < 1.0 else 1
                torch.nn.functional.conv2d(xi, wi, padding=1)
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(n):
                    torch.nn.functional.conv2d(xi, wi, padding=1)
                _sync(device)
            out[f"{c}ch {size}px {layout}"] = flops * n / (time.perf_counter() - t0) / 1e9
    return {"gflops": max(out.values()), "by_shape": out}


def forward_flops(model_cfg, size: int) -> float:
    """FLOPs of one image's forward pass of the network (convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    from radardiff.models import build_unet

    model = build_unet(model_cfg, 1, False).eval()
    x, t = torch.randn(1, 1, size, size), torch.tensor([500])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t)
    return float(counter.get_total_flops())


def _train_cfg(size: int, batch: int, precision: str, total: int, data: Path):
    from bench_train import model_section

    from radardiff.config import validate_config

    amp = {"fp32": "no"}.get(precision, precision)
    return validate_config(
        {
            "data": {"train": str(data)},
            "model": model_section(size),
            "train": {
                "steps": total,
                "batch_size": batch,
                "mixed_precision": amp,
                "checkpoint_every": 10_000,
                "log_every": 10_000,
                "val_every": 10_000,
                "tensorboard": False,
            },
        },  # fmt: skip
        "bench",
    )


def train_worker(which: str, size: int, batch: int, precision: str, steps: int, device) -> dict:
    from bench_train import bare_loop, our_loop

    from radardiff.data.synth import synthesize

    warmup = 2
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize("insar_noise", 256, size, Path(tmp) / "d.h5", seed=0)
        cfg = _train_cfg(size, batch, precision, warmup + steps + 1, data)
        out = {"flops_per_img": 3 * forward_flops(cfg.model, size)}
        if which == "bare":
            out["img_s"] = bare_loop(cfg, steps, warmup, device)
        elif which == "ours":
            out["img_s"] = our_loop(cfg, Path(tmp) / "run", steps, warmup)
        else:  # compiled, between two eager runs in this process (the VM's speed drifts)
            compiled = cfg.model_copy(
                update={"train": cfg.train.model_copy(update={"compile": True})}
            )
            info: dict = {}
            before = our_loop(cfg, Path(tmp) / "before", steps, warmup)
            out["img_s"] = our_loop(compiled, Path(tmp) / "compiled", steps, warmup, info)
            after = our_loop(cfg, Path(tmp) / "after", steps, warmup)
            out.update(compile_s=info["first_step_s"], eager_img_s=(before + after) / 2)
    return out


def sample_worker(which: str, size: int, batch: int, precision: str, steps: int, device) -> dict:
    from bench_train import model_section

    from radardiff.config import RunConfig, validate_config
    from radardiff.config.schema import DiffusionConfig, ModelConfig
    from radardiff.diffusion import Denoiser, make_sampler
    from radardiff.models import build_unet
    from radardiff.models.network import NetworkPolicy, prepare_network

    mcfg = validate_config(model_section(size), "model", ModelConfig)
    torch.manual_seed(0)
    model = build_unet(mcfg, 1, False).to(device).eval()
    diffusion = DiffusionConfig(prediction="v")
    x = torch.randn(batch, 1, size, size, device=device)
    amp = _dtype(precision)

    def bare() -> float:
        times = torch.linspace(999, 0, steps, device=device)
        _sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for t in times:
                with torch.autocast(device.type, dtype=amp, enabled=precision != "fp32"):
                    model(x, t.expand(batch)).sample.float()
        _sync(device)
        return time.perf_counter() - t0

    cl = device.type == "cpu"  # as radardiff.sample runs it
    eager = copy.deepcopy(model).to(memory_format=torch.channels_last) if cl else model
    # radardiff's kernels where radardiff sample takes them (--conv-kernels auto)
    amp_name = {"fp32": "no"}.get(precision, precision)
    prepared_net = prepare_network(eager, device, NetworkPolicy(precision=amp_name))
    kernels = prepared_net.line
    net = eager
    if which == "compiled":  # as radardiff sample --compile runs it (without the kernels)
        from radardiff.accel.compiled import FixedBatchNetwork

        net = FixedBatchNetwork(eager)

    def ours(net=net) -> float:
        prepared = make_sampler("dpmsolver++", diffusion, steps, {"use_karras_sigmas": True})
        den = Denoiser(net, RunConfig(diffusion=diffusion), 1, channels_last=cl,
                       precision={"fp32": "no"}.get(precision, precision))  # fmt: skip
        gens = [torch.Generator().manual_seed(i) for i in range(batch)]
        _sync(device)
        t0 = time.perf_counter()
        prepared.run(den.bind(), x.clone(), gens)
        _sync(device)
        return time.perf_counter() - t0

    fn = bare if which == "bare" else ours
    fn()  # warm-up (and the compile)
    if which == "compiled":  # and the eager network interleaved with it, in this process
        ours(eager)
        pairs = [(fn(), ours(eager)) for _ in range(3)]
        seconds, eager_s = (float(np.median(v)) for v in zip(*pairs, strict=True))
    else:
        seconds = float(np.median([fn() for _ in range(3)]))
    out = {"img_s": batch * steps / seconds, "flops_per_img": forward_flops(mcfg, size)}
    if which != "bare":
        out["kernel_layers"] = kernels
    if which == "compiled":
        out.update(compile_s=net.compile_seconds, eager_img_s=batch * steps / eager_s)
    return out


def worker(spec: dict) -> dict:
    from radardiff.models.network import tune_process

    tune_process()
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    kind = spec["kind"]
    if kind == "peak":
        return conv_peak(spec["precision"], device, shapes=[tuple(x) for x in spec["shapes"]])
    fn = train_worker if kind == "train" else sample_worker
    return fn(spec["which"], spec["size"], spec["batch"], spec["precision"], spec["steps"], device)


def _run(spec: dict, env: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True, text=True, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench_throughput: {spec['kind']} {spec.get('which', '')} failed: {tail}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--steps", type=int, default=6, help="timed training steps / sampler calls")
    ap.add_argument(
        "--batch-scale", type=int, default=1, help="batch = 32 (32 px), 16 (64 px) x this"
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also train and sample with the network compiled as train.compile and radardiff "
        "sample --compile do (inductor, a fresh cache: the compile time is a first run's)",
    )
    ap.add_argument("--kinds", default="train,sample", help="train, sample or both")
    ap.add_argument("--no-record", action="store_true", help="print only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.precision == "auto":
        args.precision = "bf16" if bf16_fast(args.device) else "fp32"
    base = {"device": args.device, "threads": args.threads, "precision": args.precision}
    print(
        f"torch {torch.__version__}, device {args.device}, CPU {describe_cpu()}, precision "
        f"{args.precision}, threads {args.threads or torch.get_num_threads()}, load average "
        f"{os.getloadavg()[0]:.2f} at start"
    )
    # the precision in use is probed at every shape; the other one only at the large shape
    peaks = {p: _run({**base, "kind": "peak", "precision": p,
                      "shapes": PEAK_SHAPES if p == args.precision else PEAK_SHAPES[:1]})
             for p in dict.fromkeys([args.precision, "bf16", "fp32"])}  # fmt: skip
    for p, r in peaks.items():
        shapes = ", ".join(f"{k} {v:.0f}" for k, v in r["by_shape"].items())
        print(f"peak 3x3 conv {p} (GFLOP/s, batch 32): {shapes}")
    peak = peaks[args.precision]["gflops"]
    rows = []
    print(
        f"{'':26s} {'bare':>9s} {'ours':>9s} {'ours/bare':>9s} {'GFLOP/s':>15s} {'% of peak':>13s}"
    )
    for kind, unit in (("train", "img/s"), ("sample", "img-steps/s")):
        if kind not in args.kinds.split(","):
            continue
        for size in map(int, args.sizes.split(",")):
            batch = BATCH[size] * args.batch_scale
            spec = {**base, "kind": kind, "size": size, "batch": batch, "steps": args.steps}
            bare, ours = (_run({**spec, "which": w}) for w in ("bare", "ours"))
            gf = [r["img_s"] * r["flops_per_img"] / 1e9 for r in (bare, ours)]
            print(
                f"{kind} {size} px, batch {batch:<4d} {bare['img_s']:9.2f} {ours['img_s']:9.2f} "
                f"{ours['img_s'] / bare['img_s']:9.3f} {gf[0]:7.0f} {gf[1]:7.0f} "
                f"{100 * gf[0] / peak:6.0f} {100 * gf[1] / peak:6.0f}   ({unit})"
            )
            row = {"kind": kind, "size": size, "batch": batch, "unit": unit,
                   "bare": round(bare["img_s"], 3), "ours": round(ours["img_s"], 3),
                   "ours_over_bare": round(ours["img_s"] / bare["img_s"], 4),
                   "gflops_bare": round(gf[0], 1), "gflops_ours": round(gf[1], 1),
                   "pct_of_peak_ours": round(100 * gf[1] / peak, 1)}  # fmt: skip
            rows.append(row)
            if args.compile:
                with tempfile.TemporaryDirectory() as cache:
                    c = _run({**spec, "which": "compiled"}, {"TORCHINDUCTOR_CACHE_DIR": cache})
                g = c["img_s"] * c["flops_per_img"] / 1e9
                print(
                    f"  compiled{'':17s} {'':9s} {c['img_s']:9.2f} {c['img_s'] / bare['img_s']:9.3f}"
                    f" {'':7s} {g:7.0f} {'':6s} {100 * g / peak:6.0f}   "
                    f"(after {c['compile_s']:.0f} s compiling; {c['img_s'] / c['eager_img_s']:.3f}x "
                    + (
                        "eager, interleaved in its process)"
                        if kind == "sample"
                        else "the mean of eager runs before and after it in its process)"
                    )
                )
                row["compiled"] = {"img_s": round(c["img_s"], 3),
                                   "compile_s": round(c["compile_s"], 1),
                                   "over_eager": round(c["img_s"] / c["eager_img_s"], 4)}  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    if not args.no_record:
        from _results import record

        numbers = {"device": args.device, "precision": args.precision, "steps": args.steps,
                   "threads": args.threads or torch.get_num_threads(),
                   "peak_gflops": {p: {k: round(v, 1) for k, v in r["by_shape"].items()}
                                   for p, r in peaks.items()},
                   "rows": rows}  # fmt: skip
        print(f"recorded in {record('throughput', numbers)}")


if __name__ == "__main__":
    main()
