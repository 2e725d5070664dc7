"""Where benchmarks put their numbers: one JSON line per run in ``benchmarks/results/NAME.jsonl``,
with the date, the machine (CPU model and the instruction sets that decide our speed), the load
average at the start, the commit, and the numbers. The docs quote these files; nothing keeps a
history of measurements in prose."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
_LOAD_AT_START = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3


def machine() -> dict:
    """CPU model, cores and the instruction sets that decide the kernels' paths."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return {"cpu": model, "cores": os.cpu_count(), "isa": isa}


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=RESULTS.parent,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=RESULTS.parent,
            timeout=10,
        )
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def record(name: str, numbers: dict, note: str = "") -> Path:
    """Append one run of benchmark ``name`` to ``benchmarks/results/NAME.jsonl``."""
    RESULTS.mkdir(exist_ok=True)
    row = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "load_at_start": [round(v, 2) for v in _LOAD_AT_START],
        "load_at_end": [round(v, 2) for v in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "commit": commit(),
        "numbers": numbers,
    }
    if note:
        row["note"] = note
    path = RESULTS / f"{name}.jsonl"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
    return path


def run_cli(cli, args) -> None:
    """Call radardiff's command line (``cli``, :func:`radardiff.cli.main.main`) in this
    process with ``args`` (anything printable); a failing command raises."""
    try:
        cli([str(a) for a in args])
    except SystemExit as exc:
        if exc.code:
            raise
