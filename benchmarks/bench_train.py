"""Training speed: radardiff's loop against a bare diffusers loop of the same model, same process.

For each model (32x32 = the insar_noise_32 recipe's network, 64x64 = the reference's 64 px network
with base 64 channels) and precision (fp32, bf16 autocast), prints images/s of

- ``bare``: UNet2DModel + AdamW + MSE on epsilon, random tensors in memory;
- ``ours``: radardiff's Trainer (accelerate, data from a dataset file through the normaliser,
  EMA, timestep sampler, masks, logging) on the same model and batch size;

and the ratios ours/bare and bf16/fp32 (fp16/fp32 on a GPU, with a gradient scaler in both loops).
On a GPU, ``ours`` also pays the data pipeline (dataset file -> normaliser -> host-to-device copy).
Usage:

    python benchmarks/bench_train.py [--steps 6] [--batch 16] [--sizes 32,64] [--channels-last]
    python benchmarks/bench_train.py --device cuda --precisions fp32,bf16,fp16 --batch 128 --steps 30
    python benchmarks/bench_train.py --compile   # ours with train.compile; the bare loop eager
    python benchmarks/bench_train.py --compile --compile-bare   # torch.compile in both loops

With ``--compile`` the first steps (the compile; CUDA graphs on a GPU) fall in the warm-up: give
``--warmup`` at least 2.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from radardiff._hardware import bf16_fast
from radardiff.accel.malloc import tune_malloc
from radardiff.config import load_config, validate_config
from radardiff.config.io import config_to_dict
from radardiff.data.synth import synthesize
from radardiff.diffusion import GaussianDiffusion
from radardiff.models import build_unet
from radardiff.train.loop import Trainer

REPO = Path(__file__).resolve().parents[1]


def model_section(size: int) -> dict:
    if size == 32:
        return config_to_dict(load_config(REPO / "configs" / "insar_noise_32.toml").model)
    return {
        "image_size": 64,
        "base_channels": 64,
        "channel_mult": [1, 2, 3, 4],
        "layers_per_block": 2,
        "attention_resolutions": [16],
        "attention_head_dim": 64,
    }


PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(cfg, steps: int, warmup: int, device: torch.device, compile: bool = False) -> float:
    """images/s of the plainest training loop of the same network (``torch.compile``'s default
    mode on it with ``compile``)."""
    torch.manual_seed(0)
    prec = cfg.train.mixed_precision
    model = build_unet(cfg.model, 1, False).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fwd = torch.compile(model) if compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=prec == "fp16")
    dtype = torch.float16 if prec == "fp16" else torch.bfloat16
    diffusion = GaussianDiffusion(cfg.diffusion).to(device)
    b, s = cfg.train.batch_size, cfg.model.image_size
    x0 = torch.randn(b, 1, s, s, device=device)
    times = []
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        t = torch.randint(0, cfg.diffusion.timesteps, (b,), device=device)
        noise = torch.randn_like(x0)
        x_t = diffusion.q_sample(x0, t, noise)
        with torch.autocast(device.type, dtype=dtype, enabled=prec != "no"):
            out = fwd(x_t, t).sample
        loss = torch.nn.functional.mse_loss(out.float(), noise)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return b / float(np.median(times))


def our_loop(cfg, out: Path, steps: int, warmup: int, info: dict | None = None) -> float:
    """images/s of Trainer.run, from the time between progress callbacks (the last step, which
    writes the final checkpoint, is left out). ``info`` receives ``first_step_s``, the first
    step's time (with ``train.compile``, the compile)."""
    trainer = Trainer(cfg, out)
    device = trainer.acc.device
    stamps = [time.perf_counter()]

    def stamp(done, total, info) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    trainer.run(on_progress=stamp)
    gaps = np.diff(stamps)
    if info is not None:
        info["first_step_s"] = float(gaps[0])
    gaps = gaps[1 + warmup : 1 + warmup + steps]
    return cfg.train.batch_size / float(np.median(gaps))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sizes", default="32,64")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="our loop with train.compile")
    ap.add_argument("--compile-bare", action="store_true", help="torch.compile the bare loop too")
    ap.add_argument(
        "--precisions",
        default=None,
        help="comma list of fp32, bf16, fp16 (default: fp32, and bf16 where the device computes "
        "it fast)",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-malloc-tuning", action="store_true")
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    if not args.no_malloc_tuning:
        tune_malloc()
    device = torch.device(args.device)
    if (device.type == "cuda") != torch.cuda.is_available():
        raise SystemExit("--device: the Trainer uses the GPU exactly when one is available")
    default = "fp32,bf16" if bf16_fast(device) else "fp32"
    precisions = (args.precisions or default).split(",")
    print(
        f"torch {torch.__version__}, device {device}"
        f"{' ' + torch.cuda.get_device_name() if device.type == 'cuda' else ''}, "
        f"threads {torch.get_num_threads()}, batch {args.batch}, "
        f"malloc tuning {'off' if args.no_malloc_tuning else 'on'}, "
        f"channels_last {args.channels_last}, compile ours {args.compile}, bare "
        f"{args.compile_bare}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(int, args.sizes.split(",")):
            data = synthesize("insar_noise", 256, size, Path(tmp) / f"d{size}.h5", seed=0)
            results = {}
            for name in precisions:
                prec = PRECISIONS[name]
                total = args.warmup + args.steps + 1
                cfg = validate_config(
                    {
                        "data": {"train": str(data)},
                        "model": model_section(size),
                        "train": {
                            "steps": total,
                            "batch_size": args.batch,
                            "mixed_precision": prec,
                            "log_every": 1000,
                            "checkpoint_every": 10**6,
                            "channels_last": args.channels_last,
                            "compile": args.compile,
                        },
                    }
                )
                bare = bare_loop(cfg, args.steps, args.warmup, device, args.compile_bare)
                ours = our_loop(cfg, Path(tmp) / f"run{size}{prec}", args.steps, args.warmup)
                results[name] = (bare, ours)
                rows.append({"size": size, "precision": name, "bare_img_s": round(bare, 3),
                             "ours_img_s": round(ours, 3), "ours_over_bare": round(ours / bare, 4)})  # fmt: skip
                print(
                    f"{size}x{size} {name}: bare {bare:7.1f} img/s  "
                    f"ours {ours:7.1f} img/s  ours/bare {ours / bare:.3f}",
                    flush=True,
                )
            for name in precisions:
                if name != "fp32" and "fp32" in results:
                    b, o = results[name], results["fp32"]
                    print(
                        f"{size}x{size} {name}/fp32: bare {b[0] / o[0]:.2f}x  ours {b[1] / o[1]:.2f}x"
                    )
    if not args.no_record:
        from _results import record

        device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
        numbers = {"device": device_name, "threads": torch.get_num_threads(), "batch": args.batch,
                   "steps": args.steps, "channels_last": args.channels_last,
                   "compile": args.compile, "compile_bare": args.compile_bare,
                   "malloc_tuning": not args.no_malloc_tuning, "results": rows}  # fmt: skip
        print(f"recorded in {record('train', numbers)}")


if __name__ == "__main__":
    main()
