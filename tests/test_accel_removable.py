"""The acceleration unit is optional: with ``src/radardiff/accel`` deleted, radardiff trains and
samples on torch's kernels, says so in its log, and refuses in one line what needs the unit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = """
import logging, sys
import numpy as np
from conftest import tiny_run_config
from radardiff.data.synth import synthesize
from radardiff.errors import ConfigError
from radardiff.sample import SampleOptions, generate, load_run
from radardiff.train import train

assert "radardiff.accel" not in sys.modules
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
out = sys.argv[1]
synthesize("insar_noise", 32, 16, f"{out}/t.h5", seed=0)
train(tiny_run_config(f"{out}/t.h5", model={"base_channels": 16}, train={"steps": 2}), f"{out}/run")
run = load_run(f"{out}/run")
generate(run, SampleOptions(n=2, sampler="ddim", steps=2), f"{out}/s.h5")
for bad in ({"conv_kernels": "radardiff"}, {"compile": True}):
    try:
        generate(run, SampleOptions(n=2, sampler="ddim", steps=2, **bad), f"{out}/x.h5")
    except ConfigError as err:
        print("refused:", err)
print("done", "radardiff.accel" in sys.modules)
"""


def test_radardiff_works_without_its_acceleration_unit(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SRC / "radardiff", src / "radardiff",
                    ignore=shutil.ignore_patterns("accel", "__pycache__"))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(Path(__file__).parent)])}
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "convolutions: torch's (train.conv_kernels = auto; the acceleration unit (radardiff." \
        "accel) is not installed)" in out  # fmt: skip
    assert "refused: --conv-kernels = radardiff cannot run: the acceleration unit" in out
    assert "refused: torch.compile (--compile, train.compile) needs what the acceleration" in out
    assert out.strip().endswith("done False")
    assert (tmp_path / "s.h5").is_file()
