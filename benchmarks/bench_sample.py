"""Sampling speed: image-steps/s, the overhead of our sampling loop, and wall times per request.

For a 32x32 and a 64x64 recipe-sized UNet (``configs/insar_noise_32.toml``; the 64x64 one is
``base_channels=64`` with the reference channel_mult for 64 px) at batch 64, in fp32 and bf16
autocast:

* ``bare``: a loop of UNet forwards on fixed inputs (the floor any sampler pays);
* ``ours``: a prepared sampler over the run's ``Denoiser`` (the solver's step, per-sample
  generators, parameterisation, casting) on the same inputs and number of network calls, for
  dpmsolver++ and ddpm;
* overhead (target < 5 %): against the separate bare loop, ours / bare - 1 (interleaved
  repeats, median; only meaningful on a quiet machine), and within one sampler run, total
  time / time inside the UNet - 1 (robust to a machine whose load drifts; on a GPU that run
  synchronises around every UNet call to split the time, which the plain run does not);
* wall time for 64 samples: DDPM 1000 steps and dpmsolver++ at 25 steps, measured with ``--full``,
  else estimated from the measured per-step time (a CPU needs hours for the full runs).

Usage::

    python benchmarks/bench_sample.py                  # both sizes, fp32 (+ bf16 where fast)
    python benchmarks/bench_sample.py --sizes 32 --precisions fp32 --steps 5 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch

from radardiff._hardware import bf16_fast
from radardiff.config import load_config
from radardiff.config.schema import DiffusionConfig, ModelConfig, RunConfig
from radardiff.diffusion import Denoiser, initial_noise, make_sampler
from radardiff.models.unet import build_unet

REPO = Path(__file__).resolve().parents[1]


def model_config(size: int) -> tuple[str, ModelConfig]:
    recipe = REPO / "configs" / "insar_noise_32.toml"
    if size == 32 and recipe.is_file():
        cfg = load_config(recipe).model
        return f"insar_noise_32 recipe (base {cfg.base_channels}, mult {cfg.channel_mult})", cfg
    cfg = ModelConfig(image_size=size, in_channels=1, base_channels=64)
    return f"{size}x{size} base 64, reference channel_mult", cfg


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def time_bare(model, x, times, device, precision) -> float:
    """Seconds for len(times) forwards on the same input, nothing else."""
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(device, precision):
        for t in times:
            model(x, t.expand(x.shape[0])).sample.float()
    sync(device)
    return time.perf_counter() - t0


class TimedModel(torch.nn.Module):
    """The UNet, with the seconds spent inside its forward calls added up."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model, self.device, self.seconds = model, device, 0.0

    def forward(self, *args, **kw):
        sync(self.device)
        t0 = time.perf_counter()
        out = self.model(*args, **kw)
        sync(self.device)
        self.seconds += time.perf_counter() - t0
        return out


def time_ours(run, name, diffusion, steps, x, device, precision) -> tuple[float, float]:
    """Seconds for a whole sampler run (``steps`` network calls), and of them the seconds
    inside the UNet when ``run.model`` is a :class:`TimedModel` (else 0)."""
    prepared = make_sampler(name, diffusion, steps)
    gens = [torch.Generator().manual_seed(i) for i in range(x.shape[0])]
    if isinstance(run.model, TimedModel):
        run.model.seconds = 0.0
    amp = {"fp32": "no"}.get(precision, precision)
    den = Denoiser(run.model, RunConfig(diffusion=diffusion), 1, precision=amp)
    sync(device)
    t0 = time.perf_counter()
    prepared.run(den.bind(), x.clone(), gens)
    sync(device)
    return time.perf_counter() - t0, getattr(run.model, "seconds", 0.0)


def bench(size: int, precision: str, args, device: torch.device) -> dict:
    label, mcfg = model_config(size)
    torch.manual_seed(0)
    model = build_unet(mcfg, 1, learned_variance=False).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    # plain: what users run (no synchronisation per call, so a GPU overlaps the host's work);
    # timed: synchronises around each UNet call to split the time (used for the in-run ratio)
    plain = SimpleNamespace(model=model)
    timed = SimpleNamespace(model=TimedModel(model, device))
    diffusion = DiffusionConfig(timesteps=1000)
    gens = [torch.Generator().manual_seed(i) for i in range(args.batch)]
    x = initial_noise(gens, (1, size, size)).to(device)
    k = args.steps
    times = make_sampler("dpmsolver++", diffusion, k).model_times.to(device)
    time_bare(model, x, times[:1], device, precision)  # warm-up: allocator, kernel caches
    time_ours(plain, "ddpm", diffusion, 1, x, device, precision)
    bare, dpm, ddpm, in_dpm, in_ddpm = [], [], [], [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits all alike
        bare.append(time_bare(model, x, times, device, precision))
        dpm.append(time_ours(plain, "dpmsolver++", diffusion, k, x, device, precision)[0])
        ddpm.append(time_ours(plain, "ddpm", diffusion, k, x, device, precision)[0])
        for name, acc in (("dpmsolver++", in_dpm), ("ddpm", in_ddpm)):
            total, unet = time_ours(timed, name, diffusion, k, x, device, precision)
            acc.append(total / unet - 1)
    tb, td, tp = (statistics.median(v) for v in (bare, dpm, ddpm))
    res = {
        "size": size,
        "precision": precision,
        "model": label,
        "params_M": n_params,
        "img_steps_per_s_bare": args.batch * k / tb,
        "img_steps_per_s_dpm": args.batch * k / td,
        "img_steps_per_s_ddpm": args.batch * k / tp,
        "overhead_dpm": td / tb - 1,
        "overhead_ddpm": tp / tb - 1,
        "in_run_dpm": statistics.median(in_dpm),
        "in_run_ddpm": statistics.median(in_ddpm),
        "dpm25_s": td / k * 25,
        "dpm25_measured": False,
        "ddpm1000_s": tp / k * 1000,
        "ddpm1000_measured": False,
    }
    if args.full:
        res["dpm25_s"] = time_ours(plain, "dpmsolver++", diffusion, 25, x, device, precision)[0]
        res["ddpm1000_s"] = time_ours(plain, "ddpm", diffusion, 1000, x, device, precision)[0]
        res["dpm25_measured"] = res["ddpm1000_measured"] = True
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        choices=["fp32", "bf16", "fp16"],
        help="default: fp32, and bf16 where the device computes it fast",
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=2, help="network calls per timed loop")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument(
        "--full",
        action="store_true",
        help="measure dpmsolver++ 25 steps and DDPM 1000 steps outright (slow on a CPU)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.precisions is None:
        args.precisions = ["fp32", "bf16"] if bf16_fast(device) else ["fp32"]
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, "
        f"{args.steps} network calls per loop, {args.repeats} interleaved repeats (median)"
    )
    results = []
    for precision in args.precisions:  # all fp32 first: bf16 is slow on CPUs without bf16 units
        for size in args.sizes:
            r = bench(size, precision, args, device)
            results.append(r)
            how = {True: "measured", False: "estimated from the per-step time"}
            ddpm_how, dpm_how = how[r["ddpm1000_measured"]], how[r["dpm25_measured"]]
            print(
                f"\n{r['size']}x{r['size']} {r['precision']}: {r['model']}, {r['params_M']:.1f} M params\n"
                f"  image-steps/s: bare UNet {r['img_steps_per_s_bare']:.2f}, sampler "
                f"dpmsolver++ {r['img_steps_per_s_dpm']:.2f}, ddpm {r['img_steps_per_s_ddpm']:.2f}\n"
                f"  loop overhead, within the run (total / time in UNet - 1): dpmsolver++ "
                f"{100 * r['in_run_dpm']:+.2f} %, ddpm {100 * r['in_run_ddpm']:+.2f} %\n"
                f"  loop overhead vs the separate bare loop: dpmsolver++ "
                f"{100 * r['overhead_dpm']:+.1f} %, ddpm {100 * r['overhead_ddpm']:+.1f} %\n"
                f"  {args.batch} samples: dpmsolver++ 25 steps {r['dpm25_s']:.1f} s ({dpm_how}); "
                f"DDPM 1000 steps {r['ddpm1000_s']:.0f} s ({ddpm_how}); "
                f"ratio {r['ddpm1000_s'] / r['dpm25_s']:.0f}x"
            )
    if not args.no_record:
        from _results import record

        numbers = {"device": str(device), "threads": torch.get_num_threads(), "batch": args.batch,
                   "steps": args.steps, "repeats": args.repeats, "results": results}  # fmt: skip
        print(f"recorded in {record('sample', numbers)}")


if __name__ == "__main__":
    main()
