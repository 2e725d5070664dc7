"""Data loading vs training: the loader must deliver at least 5x the images/s a training step eats.

Streams a dataset file (lazy, chunked HDF5) through the normaliser and the step-addressed batch
sampler exactly as training does, and times (a) the loader alone and (b) the forward+backward
step of the tiny recipe's network on the same batches, in the same process.

    python benchmarks/bench_loader.py [--n 20000] [--size 32] [--batch 32] [--batches 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from radardiff.config.recipes import tiny_config
from radardiff.data.dataset_file import DatasetFile
from radardiff.data.normalize import Normalizer
from radardiff.data.synth import synthesize
from radardiff.data.torch_dataset import RadarDataset, StepBatchSampler, identity_collate
from radardiff.diffusion import GaussianDiffusion
from radardiff.models import build_unet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = synthesize("insar_noise", args.n, args.size, Path(tmp) / "d.h5", seed=0)
        data = DatasetFile(path)
        norm = Normalizer.fit(data)
        ds = RadarDataset(data, norm, norm.valid_indices)
        sampler = StepBatchSampler(len(ds), args.batch, seed=0, steps=args.batches)
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=identity_collate)
        t0 = time.perf_counter()
        batches = list(loader)
        load_ips = args.batch * args.batches / (time.perf_counter() - t0)
        cfg = tiny_config()
        model = build_unet(cfg.model, 1, False)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        diffusion = GaussianDiffusion(cfg.diffusion)
        steps = min(10, len(batches))
        t0 = time.perf_counter()
        for b in batches[:steps]:
            x0 = b["image"]
            t = torch.randint(0, cfg.diffusion.timesteps, (x0.shape[0],))
            noise = torch.randn_like(x0)
            out = model(diffusion.q_sample(x0, t, noise), t).sample
            torch.nn.functional.mse_loss(out, noise).backward()
            opt.step()
            opt.zero_grad()
        train_ips = args.batch * steps / (time.perf_counter() - t0)
    print(f"dataset {args.n} x {args.size}x{args.size}, batch {args.batch}")
    print(f"loader  {load_ips:9.0f} img/s (random batches from the HDF5 file, normalised, masks)")
    print(f"train   {train_ips:9.0f} img/s (tiny recipe, fp32, forward + backward + AdamW)")
    print(f"loader / train = {load_ips / train_ips:.1f}x (target >= 5x)")
    if not args.no_record:
        from _results import record

        numbers = {"n": args.n, "size": args.size, "batch": args.batch,
                   "loader_img_s": round(load_ips, 1), "train_img_s": round(train_ips, 2),
                   "loader_over_train": round(load_ips / train_ips, 2)}  # fmt: skip
        print(f"recorded in {record('loader', numbers)}")


if __name__ == "__main__":
    main()
