"""The fault campaign, round 2: concurrent writers, signals in every write loop, damaged weights
and kernel caches, requests that cannot fit.

Run with ``make faults``; every test prints its figures on a line starting with ``FAULTS``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import tiny_run_config, write_config
from radardiff._files import hold_output, lock_path

pytestmark = pytest.mark.faults
# how long a command may take to stop after the signal: "about a second", on a loaded 2-core VM
STOP_S = 3.0


def cli(*args, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "radardiff", "-q", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


_started: list[subprocess.Popen] = []


def start(*args, env=None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "radardiff", "-q", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    _started.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_process_left():
    """A failed test leaves no command running (it would load every later measurement)."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def one_clean_line(returncode: int, stderr: str, code: int | None = None) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert returncode != 0, f"exit 0: {stderr}"
    if code is not None:
        assert returncode == code, (returncode, stderr)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("radardiff: error: "), stderr
    return lines[0]


def wait_for(proc: subprocess.Popen, ready, timeout: float = 120.0, name: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"ended before it could be interrupted: {proc.stderr.read()}"
        if ready():
            return
        time.sleep(0.02)
    raise AssertionError(f"{name}: the command never reached its write loop")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("faults2")
    for name, n in (("t.h5", 64), ("big.h5", 4000)):
        res = cli("data", "synth", "insar_noise", "--n", n, "--size", 16, "--out", w / name)
        assert res.returncode == 0, res.stderr
    cfg = tiny_run_config(str(w / "t.h5"), train={"steps": 4, "checkpoint_every": 2})
    write_config(w / "cfg.toml", cfg)
    res = cli("train", w / "cfg.toml", "--out", w / "run")
    assert res.returncode == 0, res.stderr
    res = cli("downstream", "pairs", w / "t.h5", "--n", 256, "--out", w / "pairs.h5")
    assert res.returncode == 0, res.stderr
    rng = np.random.default_rng(0)
    np.save(w / "stack.npy", rng.standard_normal((1500, 1, 96, 96)).astype(np.float32))
    return w


def _writers(w: Path, o: Path) -> list[tuple[str, list, Path, object]]:
    """(name, arguments, final output, 'writing has begun') of every long write loop."""
    return [
        ("data synth", ["data", "synth", "insar_noise", "--n", 400000, "--size", 32, "--out",
                        o / "synth.h5"], o / "synth.h5", lambda: (o / ".synth.h5.partial").exists()),
        ("data prepare", ["data", "prepare", w / "stack.npy", "--out", o / "prep.h5", "--tile",
                          16, "--stride", 8], o / "prep.h5",
         lambda: (o / ".prep.h5.partial").exists()),
        ("downstream pairs", ["downstream", "pairs", w / "t.h5", "--n", 400000, "--out",
                              o / "pairs.h5"], o / "pairs.h5",
         lambda: (o / ".pairs.h5.partial").exists()),
        ("sample", ["sample", w / "run", "--n", 4000, "--batch-size", 8, "--sampler", "ddim",
                    "--steps", 40, "--out", o / "s.h5"], o / "s.h5",
         lambda: any((o / "s.h5.parts").glob("part_*[0-9].npz"))),
        ("downstream train", ["downstream", "train", w / "pairs.h5", "--task", "recovery",
                              "--steps", 100000, "--out", o / "net"], o / "net",
         lambda: lock_path(o / "net").exists()),
        ("features train", ["features", "train", w / "big.h5", "--epochs", 1000, "--out",
                            o / "feat"], o / "feat", lambda: lock_path(o / "feat").exists()),
        ("train", ["train", w / "cfg.toml", "--out", o / "r", "--set", "train.steps=100000",
                   "--set", "train.checkpoint_every=1"], None,
         lambda: (o / "r" / "checkpoints" / "latest").exists()),
    ]  # fmt: skip


def test_the_first_signal_stops_every_write_loop(work, tmp_path, faults_say):
    """SIGINT and SIGTERM, each in every write loop: exit 130 / 143 within about a second, one
    line, nothing under the final name (a run keeps its complete checkpoints)."""
    stopped, tried, slowest = 0, 0, 0.0
    for k, sig in enumerate((signal.SIGINT, signal.SIGTERM)):
        out = tmp_path / f"out{k}"
        out.mkdir()
        for name, args, final, ready in _writers(work, out):
            proc = start(*args)
            wait_for(proc, ready, name=name)
            time.sleep(0.3)  # inside the loop, not at its first step
            sent = time.monotonic()
            proc.send_signal(sig)
            try:
                _, err = proc.communicate(timeout=60)
            finally:
                proc.kill()
            took = time.monotonic() - sent
            tried += 1
            code = 130 if sig == signal.SIGINT else 143
            one_clean_line(proc.returncode, err, code)
            assert took <= STOP_S, f"{name}: {took:.1f} s to stop"
            if final is not None:
                assert not final.exists(), f"{name}: {final} written after the signal"
            assert not list(out.glob(".*.partial")), name
            assert not list(out.glob(".*.lock")), name
            slowest = max(slowest, took)
            stopped += 1
        run = out / "r"
        latest = (run / "checkpoints" / "latest").read_text().strip()
        assert (run / "checkpoints" / latest / "state.json").is_file()
    faults_say(
        f"\nFAULTS signals: {stopped}/{tried} write loops stopped by the first signal "
        f"(SIGINT 130, SIGTERM 143), one line each, nothing under a final name; slowest "
        f"{slowest:.2f} s"
    )


def test_a_second_writer_of_one_output_is_refused(work, tmp_path, faults_say):
    """Two processes, one output: the second is refused naming the first's pid; the first
    finishes with its own output alone (seed 1's samples, not a mix)."""
    refused = tried = 0
    o = tmp_path
    # running commands against running commands
    racing = [
        (["sample", work / "run", "--n", 400, "--batch-size", 8, "--sampler", "ddim", "--steps",
          20, "--seed", 1, "--out", o / "s.h5"],
         ["sample", work / "run", "--n", 400, "--batch-size", 8, "--sampler", "ddim", "--steps",
          20, "--seed", 2, "--out", o / "s.h5"], o / "s.h5"),
        (["data", "synth", "insar_noise", "--n", 100000, "--out", o / "d.h5"],
         ["data", "synth", "insar_noise", "--n", 5, "--out", o / "d.h5"], o / "d.h5"),
        (["downstream", "pairs", work / "t.h5", "--n", 100000, "--out", o / "p.h5"],
         ["downstream", "pairs", work / "t.h5", "--n", 5, "--seed", 3, "--out", o / "p.h5"],
         o / "p.h5"),
    ]  # fmt: skip
    for first_args, second_args, out in racing:
        first = start(*first_args)
        wait_for(first, lambda out=out: lock_path(out).exists() and lock_path(out).read_text())
        # paused while it holds the output: a fast first writer (100,000 pairs take 4 s) must not
        # finish before the second has even started
        first.send_signal(signal.SIGSTOP)
        try:
            second = cli(*second_args)
        finally:
            first.send_signal(signal.SIGCONT)
        tried += 1
        line = one_clean_line(second.returncode, second.stderr, 1)
        assert f"being written by process {first.pid}" in line, line
        refused += 1
        if out.name == "s.h5":
            _, err = first.communicate(timeout=600)
            assert first.returncode == 0, err
            with h5py.File(out) as f:
                assert int(f.attrs["seed"]) == 1 and f["images"].shape[0] == 400
        else:  # stopped, or finished meanwhile: never the second's output, never a mix
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=60)
            if out.exists():
                with h5py.File(out) as f:
                    assert f["images"].shape[0] == 100000, out
    # every other writer, against an output this test process holds
    held = [
        (["data", "prepare", work / "t.h5", "--out", o / "prep.h5"], o / "prep.h5"),
        (["sample", work / "run", "--n", 2, "--steps", 2, "--out", o / "g.png"], o / "g.png"),
        (["evaluate", "--real", work / "t.h5", "--fake", work / "t.h5", "--out", o / "ev"],
         o / "ev"),
        (["features", "train", work / "t.h5", "--epochs", 1, "--out", o / "f"], o / "f"),
        (["downstream", "train", work / "pairs.h5", "--task", "recovery", "--steps", 2, "--out",
          o / "n"], o / "n"),
        (["study", "samplers", work / "run", "--samplers", "ddim", "--steps", 2, "--n", 4,
          "--real", work / "t.h5", "--out", o / "st"], o / "st"),
        (["report", work / "run"], work / "run" / "report"),
    ]  # fmt: skip
    for args, out in held:
        with hold_output(out):
            res = cli(*args)
        tried += 1
        line = one_clean_line(res.returncode, res.stderr, 1)
        assert f"being written by process {os.getpid()}" in line, (args[0], line)
        assert not out.exists() or out == work / "run" / "report"
        refused += 1
    faults_say(f"\nFAULTS concurrent writers: {refused}/{tried} second writers refused naming the "
          "holder, no mixed output")  # fmt: skip


def _overwrite_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 256] = os.urandom(256)
    path.write_bytes(bytes(data))


def test_damaged_weights_and_edited_configs_are_refused(work, tmp_path, faults_say):
    cases = 0
    for which in ("ema", "model"):
        run = tmp_path / f"run_{which}"
        shutil.copytree(work / "run", run)
        latest = (run / "checkpoints" / "latest").read_text().strip()
        _overwrite_middle(
            run / "checkpoints" / latest / which / "diffusion_pytorch_model.safetensors"
        )
        res = cli(
            "sample", run, "--n", 2, "--steps", 2, "--weights", which, "--out", tmp_path / "x.h5"
        )
        line = one_clean_line(res.returncode, res.stderr, 1)
        assert "damaged or changed since its checkpoint was written" in line, line
        cases += 1
        res = cli("train", run / "config.toml", "--out", run, "--resume", "--set", "train.steps=6")
        line = one_clean_line(res.returncode, res.stderr, 1)
        assert "damaged or changed" in line or "safetensors" in line, line
        cases += 1
    run = tmp_path / "edited"
    shutil.copytree(work / "run", run)
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("image_size = 16", "image_size = 32"))
    res = cli("sample", run, "--n", 2, "--steps", 2, "--out", tmp_path / "y.h5")
    assert "model.image_size differ" in one_clean_line(res.returncode, res.stderr, 1)
    cases += 1
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()
    faults_say(f"\nFAULTS damaged weights: {cases}/{cases} refused in one line naming the file")


def test_a_damaged_kernel_cache_never_breaks_a_run(work, tmp_path, faults_say):
    """Truncated, garbage and empty cached libraries, and a compiler that writes nothing: the
    default run rebuilds or falls back to torch's path, never dies (SIGBUS was exit 135)."""
    env = {**os.environ, "RADARDIFF_CACHE": str(tmp_path / "cache")}
    args = ["sample", work / "run", "--n", 4, "--steps", 3, "--sampler", "ddim"]
    ref = cli(*args, "--out", tmp_path / "ref.h5", env=env)
    assert ref.returncode == 0, ref.stderr
    (lib,) = (tmp_path / "cache").glob("conv-*.so")
    good = lib.read_bytes()
    runs = 0
    for k, damaged in enumerate((good[: len(good) // 3], os.urandom(len(good)), b"")):
        lib.write_bytes(damaged)
        res = cli(*args, "--out", tmp_path / f"s{k}.h5", env=env)
        assert res.returncode == 0, res.stderr
        with h5py.File(tmp_path / f"s{k}.h5") as a, h5py.File(tmp_path / "ref.h5") as b:
            np.testing.assert_array_equal(a["images"][:], b["images"][:])
        runs += 1
    true = shutil.which("true")
    env_true = {**env, "RADARDIFF_CACHE": str(tmp_path / "cache2"), "CC": true}
    for k in range(2):  # the second run finds the failure again: no poisoned cache
        res = cli(*args, "--out", tmp_path / f"t{k}.h5", env=env_true)
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        assert not list((tmp_path / "cache2").glob("conv-*.so"))
        runs += 1
    faults_say(f"\nFAULTS kernel cache: {runs}/{runs} runs on damaged caches or an empty compiler "
          "finished (rebuilt or torch's path), the rebuilt ones bit-identical")  # fmt: skip


def test_requests_that_cannot_fit_are_refused_before_writing(work, tmp_path, faults_say):
    o = tmp_path
    cases = [
        (["downstream", "pairs", work / "t.h5", "--n", 10**9, "--out", o / "p.h5"], o / "p.h5"),
        (["data", "synth", "insar_noise", "--n", 10**9, "--size", 64, "--out", o / "d.h5"],
         o / "d.h5"),
        (["sample", work / "run", "--n", 10**9, "--out", o / "s.h5"], o / "s.h5"),
    ]  # fmt: skip
    for args, out in cases:
        t0 = time.monotonic()
        res = cli(*args)
        line = one_clean_line(res.returncode, res.stderr, 1)
        assert "free; ask for less" in line and str(out) in line, line
        assert time.monotonic() - t0 < 60
        assert not out.exists() and not list(o.glob(".*partial")) and not list(o.glob("*.parts"))
    faults_say(f"\nFAULTS oversize: {len(cases)}/{len(cases)} requests larger than the free disk "
          "refused before writing")  # fmt: skip
