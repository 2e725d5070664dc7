"""radardiff's training and sampling loops of two checkouts, interleaved in one run.

A change that should not move speed (a refactor) is checked against the commit before it on the
same machine, at the same time: the VM's speed drifts 10-30 % between runs, so only ratios
measured side by side mean anything. Each round runs ``bench_throughput.py``'s ``ours`` workers
(one process per measurement: radardiff's ``Trainer`` steps and a prepared ``dpmsolver++``
sampler) once for each checkout, the order flipped every round; each checkout runs its own
benchmark script on its own source (``PYTHONPATH=CHECKOUT/src``).

Usage::

    git worktree add /tmp/base HEAD~5                  # the commit to compare against
    python benchmarks/bench_ab.py --base /tmp/base --rounds 3 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
BATCH = {32: 32, 64: 16}


def run_worker(checkout: Path, spec: dict) -> float:
    """Images per second of one ``ours`` measurement of ``checkout``."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    script = checkout / "benchmarks" / "bench_throughput.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--worker", json.dumps(spec)],
        capture_output=True, text=True, check=False, env=env, cwd=checkout,
    )  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench_ab: {checkout}: {spec['kind']} failed: {tail}")
    return float(json.loads(lines[-1])["img_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="checkout of the commit to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="32")
    ap.add_argument("--kinds", default="train,sample")
    ap.add_argument("--precision", default="fp32", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    checkouts = {"base": Path(args.base).resolve(), "new": REPO}
    results: dict = {}
    print(f"load average at the start: {os.getloadavg()}", flush=True)
    for kind in args.kinds.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            spec = {"kind": kind, "which": "ours", "size": size, "batch": BATCH[size],
                    "precision": args.precision, "steps": args.steps, "device": "cpu",
                    "threads": args.threads}  # fmt: skip
            times: dict[str, list[float]] = {"base": [], "new": []}
            for r in range(args.rounds):
                for name in ("base", "new") if r % 2 == 0 else ("new", "base"):
                    times[name].append(run_worker(checkouts[name], spec))
            med = {k: statistics.median(v) for k, v in times.items()}
            ratio = med["new"] / med["base"]
            key = f"{kind} {size}px"
            results[key] = {"img_s": times, "median_img_s": med, "new_over_base": round(ratio, 4)}
            print(f"{key:14s} base {med['base']:7.2f} img/s  new {med['new']:7.2f} img/s  "
                  f"new / base {ratio:.3f}  (rounds {times})", flush=True)  # fmt: skip
    print(f"load average at the end: {os.getloadavg()}")
    if not args.no_record:
        from _results import record

        base_commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=checkouts["base"],
        ).stdout.strip()  # fmt: skip
        numbers = {"base_commit": base_commit, "precision": args.precision, "threads": args.threads,
                   "steps": args.steps, "rounds": args.rounds, "results": results}  # fmt: skip
        print(f"recorded in {record('ab', numbers)}")


if __name__ == "__main__":
    main()
