"""The fault campaign: the real CLI killed, starved of disk and fed malformed inputs.

Run it with ``make faults`` (``pytest -m faults``); CI runs it after the test suite. Every test
prints its figures (kills survived / tried, bad inputs with a clean error / tried) on a line
starting with ``FAULTS``.

- training killed (SIGKILL) at random moments and during checkpoint writes, resumed until done:
  the weights, EMA and state must equal those of a run that never stopped;
- sampling and data writing killed and run again: the same file as an uninterrupted run;
- a full disk (a small tmpfs; skipped with the reason where one cannot be mounted): one line
  naming the file, exit 1, the last complete checkpoint kept, nothing under a final name;
- a table of malformed inputs: each exits non-zero with one line, no traceback, and leaves no
  file under a final name.
"""

from __future__ import annotations

import hashlib
import json
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

pytestmark = pytest.mark.faults
REPO = Path(__file__).resolve().parents[2]


def cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "radardiff", "-q", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "radardiff", "-q", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_clean_line(res: subprocess.CompletedProcess, code: int | None = None) -> str:
    """The error as a user sees it: non-zero exit, one line, no traceback."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0, f"exit 0 for a bad input: {res.stderr}"
    if code is not None:
        assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and lines[0].startswith("radardiff: error: "), res.stderr
    return lines[0]


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def checkpoint_digest(run: Path) -> str:
    name = (run / "checkpoints" / "latest").read_text().strip()
    ck = run / "checkpoints" / name
    files = [ck / w / "diffusion_pytorch_model.safetensors" for w in ("model", "ema")]
    state = json.loads((ck / "state.json").read_text())
    return digest(*files) + json.dumps(state, sort_keys=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("faults")
    res = cli("data", "synth", "insar_noise", "--n", "64", "--size", "16", "--out", w / "t.h5")
    assert res.returncode == 0, res.stderr
    cfg = tiny_run_config(
        str(w / "t.h5"),
        train={"steps": 14, "checkpoint_every": 1, "log_every": 1, "deterministic": True},
    )
    write_config(w / "cfg.toml", cfg)
    res = cli("train", w / "cfg.toml", "--out", w / "straight")
    assert res.returncode == 0, res.stderr
    return w


def latest_step(run: Path) -> int:
    """The step of the run's newest complete checkpoint (0 before the first)."""
    try:
        return int((run / "checkpoints" / "latest").read_text().strip().rsplit("_", 1)[1])
    except (OSError, ValueError, IndexError):
        return 0


def test_training_killed_anywhere_resumes_to_the_same_weights(work, faults_say):
    """Every other kill lands while a checkpoint is being written; the others at a random moment
    after the process has made progress (a new checkpoint), so each kill happens mid-run however
    fast the machine is."""
    rng = np.random.default_rng(0)
    run = work / "chain"
    kills = during_write = 0
    for attempt in range(12):
        args = ["train", work / "cfg.toml", "--out", run] + (["--resume"] if attempt else [])
        before = latest_step(run)
        proc = start(*args)
        in_write = attempt % 2 == 1
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            if in_write and any((run / "checkpoints").glob(".step_*.tmp")):
                break
            if not in_write and latest_step(run) > before:
                time.sleep(rng.uniform(0.0, 0.4))  # somewhere inside the following steps
                break
            time.sleep(0.001 if in_write else 0.01)
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()
            break
        writing = any((run / "checkpoints").glob(".step_*.tmp"))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        during_write += writing
    else:
        res = cli("train", work / "cfg.toml", "--out", run, "--resume")
        assert res.returncode == 0, res.stderr
    assert kills >= 4, f"only {kills} kills: training ended before the campaign could kill it"
    assert checkpoint_digest(run) == checkpoint_digest(work / "straight")
    steps = [json.loads(x)["step"] for x in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # every logged step once
    faults_say(
        f"\nFAULTS training: {kills} SIGKILLs ({during_write} during a checkpoint write), "
        f"{kills}/{kills} resumed to the weights of the unbroken run"
    )


def test_sampling_and_data_writing_killed_give_the_same_files(work, faults_say):
    args = ["sample", work / "straight", "--n", "40", "--batch-size", "4", "--sampler", "ddim",
            "--steps", "30"]  # fmt: skip
    ref = cli(*args, "--out", work / "ref.h5")
    assert ref.returncode == 0, ref.stderr
    out, parts = work / "s.h5", work / "s.h5.parts"
    kills = 0
    for wanted in (2, 5, 8):
        proc = start(*args, "--out", out)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            if len(list(parts.glob("part_*[0-9].npz"))) >= wanted:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert not out.exists()
    res = cli(*args, "--out", out)
    assert res.returncode == 0, res.stderr
    with h5py.File(out) as a, h5py.File(work / "ref.h5") as b:
        np.testing.assert_array_equal(a["images"][:], b["images"][:])
        np.testing.assert_array_equal(a["seeds"][:], b["seeds"][:])
    synth = ["data", "synth", "insar_noise", "--n", "30000", "--size", "16", "--seed", "3"]
    assert cli(*synth, "--out", work / "ref_synth.h5").returncode == 0
    proc = start(*synth, "--out", work / "synth.h5")
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if (work / ".synth.h5.partial").exists():  # killed while writing, not before
            time.sleep(0.3)
            break
        time.sleep(0.01)
    assert proc.poll() is None, "synth ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data_kills = 1
    assert not (work / "synth.h5").exists()
    assert cli(*synth, "--out", work / "synth.h5").returncode == 0
    with h5py.File(work / "synth.h5") as a, h5py.File(work / "ref_synth.h5") as b:
        np.testing.assert_array_equal(a["images"][:], b["images"][:])
    assert not list(work.glob(".*.partial"))
    faults_say(
        f"\nFAULTS sampling: {kills} SIGKILLs, the re-run file equals the unbroken one; "
        f"data writing: {data_kills} SIGKILL, no file under the final name, re-run identical"
    )


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or 'needs root'})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_is_one_line_naming_the_file(work, small_disk, faults_say):
    run = small_disk / "run"
    cfg = tiny_run_config(str(work / "t.h5"), train={"steps": 40, "checkpoint_every": 1})
    write_config(work / "disk.toml", cfg)
    line = one_clean_line(cli("train", work / "disk.toml", "--out", run), code=1)
    assert "disk full" in line and str(run) in line, line
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert (run / "checkpoints" / latest / "state.json").is_file()
    assert not list((run / "checkpoints").glob(".*.tmp"))
    filler = small_disk / "filler"
    with filler.open("wb") as fh:  # fill what is left
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    cases = 2
    line = one_clean_line(
        cli("sample", work / "straight", "--n", "64", "--steps", "2", "--out", small_disk / "s.h5"),
        code=1,
    )
    # refused before writing (the free space cannot hold the request) or when the disk fills
    full = ("disk full", "free; ask for less")
    assert any(w in line for w in full) and "s.h5" in line, line
    line = one_clean_line(
        cli("data", "synth", "insar_noise", "--n", "500", "--out", small_disk / "d.h5"), code=1
    )
    assert any(w in line for w in full) and "d.h5" in line, line
    assert not (small_disk / "s.h5").exists() and not (small_disk / "d.h5").exists()
    faults_say(
        f"\nFAULTS full disk: {cases + 1}/{cases + 1} writes ended with one line naming the file"
    )


def _bad_files(d: Path, work: Path) -> dict[str, Path]:
    """Malformed inputs of every kind a user can hand over."""
    f = {}
    good = work / "t.h5"
    f["truncated"] = d / "truncated.h5"
    data = good.read_bytes()
    f["truncated"].write_bytes(data[: len(data) // 3])
    f["not_hdf5"] = d / "text.h5"
    f["not_hdf5"].write_text("this is not HDF5\n")
    f["empty"] = d / "empty.h5"
    f["empty"].write_bytes(b"")
    f["no_images"] = d / "nokey.h5"
    with h5py.File(f["no_images"], "w") as h5:
        h5["data"] = np.zeros((4, 1, 16, 16), np.float32)
    f["wrong_ndim"] = d / "ndim.h5"
    with h5py.File(f["wrong_ndim"], "w") as h5:
        h5["images"] = np.zeros((4, 16, 16), np.float32)
    f["bad_labels"] = d / "labels.h5"
    with h5py.File(f["bad_labels"], "w") as h5:
        h5["images"] = np.zeros((4, 1, 16, 16), np.float32)
        h5["labels"] = np.zeros((3,), np.int64)
    f["nan_only"] = d / "nan.h5"
    with h5py.File(f["nan_only"], "w") as h5:
        h5["images"] = np.full((4, 1, 16, 16), np.nan, np.float32)
        h5.attrs["kind"] = "insar_noise"
    f["huge"] = d / "huge.h5"
    with h5py.File(f["huge"], "w") as h5:
        h5.create_dataset("images", shape=(10**9, 1, 32, 32), dtype="f4", chunks=(1, 1, 32, 32))
    f["size32"] = d / "size32.h5"
    cli("data", "synth", "insar_noise", "--n", "4", "--size", "32", "--out", f["size32"])
    f["bad_toml"] = d / "bad.toml"
    f["bad_toml"].write_text("[train\nsteps = = 3\n")
    f["unknown_key"] = d / "unknown.toml"
    f["unknown_key"].write_text("[train]\nstepz = 3\n")
    f["zero_heads"] = d / "heads.toml"
    f["zero_heads"].write_text("[model]\nbase_channels = 8\nchannel_mult = [1]\n")
    f["no_ckpt"] = d / "no_ckpt_run"
    f["no_ckpt"].mkdir()
    (f["no_ckpt"] / "config.toml").write_text("")
    f["escape"] = d / "escape_run"
    shutil.copytree(work / "straight", f["escape"])
    (f["escape"] / "checkpoints" / "latest").write_text("../../x\n")
    f["npy_folder"] = d / "npys"
    f["npy_folder"].mkdir()
    (f["npy_folder"] / "a.npy").write_bytes(b"\x93NUMPY garbage")
    return f


def test_malformed_inputs_give_one_clean_line(work, tmp_path, faults_say):
    f = _bad_files(tmp_path, work)
    o = tmp_path / "out"
    cfg, run = work / "cfg.toml", work / "straight"
    cases = [
        (["data", "inspect", f["truncated"]], None),
        (["data", "inspect", f["not_hdf5"]], None),
        (["data", "inspect", f["empty"]], None),
        (["data", "inspect", f["no_images"]], None),
        (["data", "inspect", f["wrong_ndim"]], None),
        (["data", "inspect", f["bad_labels"]], None),
        (["data", "inspect", f["huge"]], None),
        (["data", "inspect", tmp_path / "missing.h5"], None),
        (["data", "inspect", work / "t.h5", "--preview", o / "p.h5"], o / "p.h5"),
        (["data", "synth", "insar_noise", "--n", "0", "--out", o / "a.h5"], o / "a.h5"),
        (["data", "synth", "insar_noise", "--n", "2", "--size", "0", "--out", o / "b.h5"], o / "b.h5"),
        (["data", "synth", "insar_noise", "--n", "2", "--out", o / "c.png"], o / "c.png"),
        (["data", "synth", "nope", "--n", "2", "--out", o / "d.h5"], o / "d.h5"),
        (["data", "synth", "sar", "--n", "2", "--param", "looks=-3", "--out", o / "e.h5"], o / "e.h5"),
        (["data", "synth", "sar", "--n", "2", "--param", "colour=3", "--out", o / "f.h5"], o / "f.h5"),
        (["data", "prepare", tmp_path / "nowhere", "--out", o / "g.h5"], o / "g.h5"),
        (["data", "prepare", f["npy_folder"], "--out", o / "h.h5"], o / "h.h5"),
        (["data", "prepare", f["npy_folder"], "--out", o / "i.png"], o / "i.png"),
        (["data", "prepare", work / "t.h5", "--out", o / "j.h5", "--split", "0.5,0.7"], o / "j_train.h5"),
        (["data", "prepare", work / "t.h5", "--out", o / "k.h5", "--tile", "0"], o / "k.h5"),
        (["train", f["bad_toml"], "--out", o / "r1"], o / "r1"),
        (["train", f["unknown_key"], "--out", o / "r2"], o / "r2"),
        (["train", f["zero_heads"], "--out", o / "r3", "--set", f"data.train={work / 't.h5'}"], o / "r3"),
        (["train", cfg, "--out", o / "r4", "--set", f"data.train={f['truncated']}"], o / "r4"),
        (["train", cfg, "--out", o / "r5", "--set", f"data.train={f['nan_only']}"], o / "r5"),
        (["train", cfg, "--out", o / "r6", "--set", f"data.train={f['huge']}"], o / "r6"),
        (["train", cfg, "--out", o / "r7", "--set", f"data.train={f['size32']}"], o / "r7"),
        (["train", cfg, "--out", o / "r8", "--set", "train.steps=0"], o / "r8"),
        (["train", cfg, "--out", o / "r9", "--set", "model.num_classes=3"], o / "r9"),
        (["train", cfg, "--out", run], None),  # holds checkpoints already
        (["train", "--out", o / "r10", "--resume"], o / "r10"),
        (["sample", run, "--n", "2", "--out", o / "s1.h5", "--steps", "0"], o / "s1.h5"),
        (["sample", run, "--n", "2", "--out", o / "s2.h5", "--batch-size", "0"], o / "s2.h5"),
        (["sample", run, "--n", "0", "--out", o / "s3.h5"], o / "s3.h5"),
        (["sample", run, "--n", "2", "--out", o / "s4.h5", "--sampler", "nope"], o / "s4.h5"),
        (["sample", run, "--n", "2", "--out", o / "s5.h5", "--option", "eta=3"], o / "s5.h5"),
        (["sample", run, "--n", "2", "--out", o / "s6.h5", "--steps", "51"], o / "s6.h5"),
        (["sample", run, "--n", "2", "--out", o / "s7.jpg"], o / "s7.jpg"),
        (["sample", run, "--n", "2", "--out", o / "s8.h5", "--class", "1"], o / "s8.h5"),
        (["sample", run, "--n", "2", "--out", o / "s9.h5", "--checkpoint", "7"], o / "s9.h5"),
        (["sample", f["no_ckpt"], "--n", "2", "--out", o / "s10.h5"], o / "s10.h5"),
        (["sample", f["escape"], "--n", "2", "--out", o / "s11.h5"], o / "s11.h5"),
        (["sample", tmp_path / "no_run", "--n", "2", "--out", o / "s12.h5"], o / "s12.h5"),
        (["evaluate", "--real", f["truncated"], "--fake", work / "t.h5", "--out", o / "e1"], o / "e1"),
        (["evaluate", "--real", work / "t.h5", "--fake", f["size32"], "--out", o / "e2"], o / "e2"),
        (["evaluate", "--real", work / "t.h5", "--fake", work / "t.h5", "--out", o / "e3", "--metrics", "speckle"], o / "e3"),
        (["evaluate", "--real", work / "t.h5", "--fake", work / "t.h5", "--out", o / "e4", "--max-lag", "99"], o / "e4"),
        (["study", "samplers", run, "--samplers", "ddim:eta", "--steps", "2", "--n", "2", "--real", work / "t.h5", "--out", o / "st1"], o / "st1" / "samplers.json"),
        (["study", "samplers", run, "--samplers", "ddim", "--steps", "2", "--n", "1", "--real", work / "t.h5", "--out", o / "st2"], o / "st2" / "samplers.json"),
        (["downstream", "pairs", f["truncated"], "--n", "4", "--out", o / "p1.h5"], o / "p1.h5"),
        (["downstream", "pairs", f["nan_only"], "--n", "4", "--pixel-spacing", "90", "--out", o / "p2.h5"], o / "p2.h5"),
        (["downstream", "pairs", f["no_ckpt"], "--n", "4", "--out", o / "p3.h5"], o / "p3.h5"),
        (["downstream", "pairs", f["size32"], "--n", "4", "--masks", work / "t.h5", "--out", o / "p4.h5"], o / "p4.h5"),
        (["downstream", "train", f["truncated"], "--task", "recovery", "--out", o / "n1"], o / "n1"),
        (["downstream", "experiment", "--train-real", work / "t.h5", "--test-real", work / "t.h5", "--generated", work / "t.h5", "--out", o / "x1"], o / "x1" / "downstream.json"),
        # non-finite or out-of-range numbers, refused before any work
        (["downstream", "pairs", work / "t.h5", "--n", "4", "--wavelength", "inf", "--out", o / "p5.h5"], o / "p5.h5"),
        (["downstream", "pairs", work / "t.h5", "--n", "4", "--peak-los", "0.01,inf", "--out", o / "p6.h5"], o / "p6.h5"),
        (["downstream", "pairs", work / "t.h5", "--n", "4", "--seed", "-1", "--out", o / "p7.h5"], o / "p7.h5"),
        (["downstream", "train", f["truncated"], "--task", "recovery", "--lr", "nan", "--out", o / "n2"], o / "n2"),
        (["data", "synth", "insar_noise", "--n", "2", "--seed", "-1", "--out", o / "l.h5"], o / "l.h5"),
        (["data", "synth", "insar_noise", "--n", "2", "--pixel-spacing", "nan", "--out", o / "m.h5"], o / "m.h5"),
        (["data", "synth", "sar", "--n", "2", "--param", "looks=inf", "--out", o / "n.h5"], o / "n.h5"),
        (["train", cfg, "--out", o / "r11", "--set", "train.lr=inf"], o / "r11"),
        (["train", cfg, "--out", o / "r12", "--set", "train.seed=-3"], o / "r12"),
        (["sample", run, "--n", "2", "--seed", "-1", "--out", o / "s13.h5"], o / "s13.h5.parts"),
        (["sample", run, "--n", "2", "--guidance", "nan", "--out", o / "s14.h5"], o / "s14.h5.parts"),
        (["report", tmp_path / "no_run"], None),
        (["frobnicate"], None),
        (["train", "--frob"], None),
    ]  # fmt: skip
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:  # each case is its own process
        results = list(pool.map(lambda case: cli(*case[0]), cases))
    clean = 0
    lines = []
    for (args, must_not_exist), res in zip(cases, results, strict=True):
        lines.append(f"{' '.join(map(str, args[:2]))}: {one_clean_line(res)}")
        if must_not_exist is not None:
            assert not Path(must_not_exist).exists(), (args, must_not_exist)
        clean += 1
    (tmp_path / "lines.txt").write_text("\n".join(lines))
    assert (run / "checkpoints" / "latest").is_file()  # the refused train left the run alone
    faults_say(f"\nFAULTS malformed inputs: {clean}/{len(cases)} with one clean line and no file")
    if os.environ.get("RADARDIFF_FAULTS_VERBOSE"):
        faults_say("\n".join(lines))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX processes")
def test_two_trainings_of_one_run_do_not_collide(work, faults_say):
    """The second `train --resume` of a run is refused while the first holds it."""
    run = work / "locked"
    shutil.copytree(work / "straight", run)
    longer = ["train", work / "cfg.toml", "--out", run, "--resume", "--set", "train.steps=400"]
    first = start(*longer)
    lock, deadline = run / ".lock", time.time() + 60
    while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.05)
    second = cli(*longer)
    line = one_clean_line(second, code=1)
    assert f"in use by process {first.pid}" in line, line
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=60)
    assert first.returncode == 143
    faults_say("\nFAULTS lock: 1/1 concurrent resume refused naming the holder")
