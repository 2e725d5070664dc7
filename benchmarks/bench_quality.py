"""Quality per cost: score vs network calls vs seconds per sample, for each sampler on one model.

Every sampler variant draws the same ``--n`` seeds from one fixed model and is scored against the
distribution the model learned (``--real``), beside the floor (``--n`` real images of the same
distribution from ``--floor``, scored the same way) and beside DDPM at ``--ref-steps`` (the
quality the fast samplers are measured against). Per row it prints the network calls per
sample, seconds per sample, the semivariogram relative error, the lag-1 semivariance ratio and
the fraction of noise samples, then the error and the time as ratios of the DDPM reference's.

Without ``--run`` it first makes its own fixed model: synthetic ``insar_noise`` scenes (training,
real and floor sets of three seeds) and the ``tiny`` recipe trained for ``--train-steps`` steps
(bf16 where the CPU has it), under ``--work`` (reused when it is there).

Usage::

    python benchmarks/bench_quality.py                               # its own synthetic model
    python benchmarks/bench_quality.py --run runs/real_v --real data/ref.h5 --floor data/other.h5 \\
        --samplers ddpm,dpmsolver++,dpmsolver++-hybrid:eta_min_t=600 --steps 10,25 --n 256

Only ratios measured in one run compare; timings need a quiet machine (say the load average).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from radardiff.config import EvalConfig, load_config
from radardiff.evaluate.study import study_samplers

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLERS = "ddpm,ddim,dpmsolver++,dpmsolver++-sde,dpmsolver++-hybrid"


def own_model(work: Path, train_steps: int) -> tuple[Path, Path, Path]:
    """A tiny insar_noise model and its real/floor sets under ``work`` (made once)."""
    from radardiff.data.synth import synthesize
    from radardiff.train import train

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, n, seed in (("train", 8000, 0), ("real", 2000, 1), ("floor", 2000, 2)):
        path = data / f"noise_{name}.h5"
        files[name] = path if path.is_file() else synthesize("insar_noise", n, 32, path, seed)
    run = work / f"tiny_{train_steps}"
    if not (run / "checkpoints" / "latest").is_file():
        cfg = load_config(
            REPO / "configs" / "tiny.toml",
            [
                f"data.train={files['train']}",
                f"train.steps={train_steps}",
                "train.mixed_precision=bf16",
                f"train.checkpoint_every={train_steps}",
            ],
        )
        t0 = time.perf_counter()
        train(cfg, run)
        print(f"trained {run} in {(time.perf_counter() - t0) / 60:.1f} min")
    return run, files["real"], files["floor"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a trained run (default: make one, see above)")
    p.add_argument("--real", type=Path, help="the learned distribution's data (.h5)")
    p.add_argument("--floor", type=Path, help="more of it, disjoint from --real (.h5)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--samplers", default=DEFAULT_SAMPLERS)
    p.add_argument("--steps", default="10,25")
    p.add_argument("--ref-steps", type=int, default=1000, help="DDPM steps of the reference")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="bf16", choices=["no", "bf16"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--train-steps", type=int, default=4000)
    p.add_argument("--work", type=Path, default=REPO / "runs" / "bench_quality")
    p.add_argument("--out", type=Path, default=None, help="default: RUN/study_quality")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run is None:
        args.run, args.real, args.floor = own_model(args.work, args.train_steps)
    elif args.real is None:
        p.error("--real is needed with --run")
    steps = [int(k) for k in args.steps.split(",")]
    variants = [s.strip() for s in args.samplers.split(",") if s.strip()]
    out = args.out or args.run / "study_quality"
    cfg = EvalConfig(metrics=("semivariogram", "psd"), bootstrap=0)
    common = dict(
        n=args.n, real=args.real, seed=0, batch_size=args.batch_size, eval_cfg=cfg,
        checkpoint=args.checkpoint, floor=args.floor, precision=args.precision,
    )  # fmt: skip
    load = os.getloadavg()[0]
    ref = study_samplers(args.run, ["ddpm"], [args.ref_steps], out_dir=out / "reference", **common)
    res = study_samplers(args.run, variants, steps, out_dir=out, with_reference=False, **common)
    base = ref.rows[0]
    st = ref.settings
    print(
        f"model {st['run_dir']} checkpoint {st['checkpoint']} ({st['train_steps']} steps"
        + (f", {st['train_minutes']:.0f} min" if st.get("train_minutes") else "")
        + f"); {args.n} samples per row against {args.real}; torch threads "
        f"{torch.get_num_threads()}, {args.precision}; load average {load:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end"
    )
    head = f"{'sampler':>40s} {'calls':>6s} {'s/sample':>9s} {'sv err':>7s} {'lag-1':>6s} "
    print(head + f"{'noise':>6s} {'err/ref':>8s} {'time/ref':>8s}")

    def line(label, r, floor=False):
        calls = "" if floor else f"{r['nfe']:6.0f}"
        secs = "" if floor else f"{r['s_per_sample']:9.4f}"
        ratio = "" if floor else f"{r['s_per_sample'] / base['s_per_sample']:8.3f}"
        print(
            f"{label:>40s} {calls:>6s} {secs:>9s} {r['semivariogram_rel_error']:7.3f} "
            f"{r['lag1_ratio']:6.2f} {r['noise_fraction']:6.1%} "
            f"{r['semivariogram_rel_error'] / base['semivariogram_rel_error']:8.2f} {ratio:>8s}"
        )

    line(f"ddpm {args.ref_steps} (reference)", base)
    for r in res.rows:
        line(f"{r['sampler']} {r['steps']}", r)
    if ref.reference:
        line(f"floor: {args.n} images of {Path(ref.reference['source']).name}", ref.reference, True)
    if not args.no_record:
        from _results import record

        keys = ("sampler", "steps", "nfe", "s_per_sample", "semivariogram_rel_error",
                "lag1_ratio", "noise_fraction")  # fmt: skip
        numbers = {
            "run": str(st["run_dir"]), "checkpoint": st["checkpoint"],
            "train_steps": st["train_steps"], "real": str(args.real), "n": args.n,
            "precision": args.precision, "threads": torch.get_num_threads(),
            "reference": {k: base.get(k) for k in keys},
            "rows": [{k: r.get(k) for k in keys} for r in res.rows],
            "floor": {k: ref.reference.get(k) for k in keys[4:]} if ref.reference else None,
        }  # fmt: skip
        print(f"recorded in {record('quality', numbers)}")


if __name__ == "__main__":
    main()
