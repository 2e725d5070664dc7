"""The HTML report of a tiny run renders in headless Chromium and loads nothing from outside."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from radardiff.config import EvalConfig
from radardiff.evaluate import evaluate_files

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.fixture(scope="module")
def report_page(trained_run, noise_files, tmp_path_factory) -> Path:
    """A copy of the tiny run with samples, metrics and a sampler study, and its report."""
    from radardiff.evaluate.study import study_samplers
    from radardiff.report import write_report
    from radardiff.sample import SampleOptions, generate, load_run

    run_dir = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(trained_run, run_dir)  # the session's run stays untouched
    run = load_run(run_dir)
    samples = generate(run, SampleOptions(n=8, sampler="ddim", steps=3, batch_size=8),
                       run_dir / "samples" / "s.h5").path  # fmt: skip
    cfg = EvalConfig(bootstrap=10)
    evaluate_files(noise_files[1], samples, cfg, run_dir / "eval")
    study_samplers(run_dir, ["ddim", "dpmsolver++"], [2, 3], 2, noise_files[1], seed=0,
                   batch_size=2, eval_cfg=EvalConfig(metrics=("semivariogram",), bootstrap=0))  # fmt: skip
    _downstream(run_dir, noise_files, samples)
    return write_report(run_dir)


def _downstream(run_dir, noise_files, samples) -> None:
    from radardiff.evaluate.downstream import (
        ExperimentConfig,
        default_training,
        run_experiment,
    )

    tiny = {"steps": 2, "batch_size": 4, "val_every": 1, "width": 4, "levels": 2,
            "val_fraction": 0.25}  # fmt: skip
    cfg = ExperimentConfig(
        train_real=str(noise_files[0]), test_real=str(noise_files[1]), generated=str(samples),
        physics=str(noise_files[0]), seeds=(0, 1), n_train=32, n_test=16,
        training={t: default_training(t, **tiny) for t in ("recovery", "detection")},
    )  # fmt: skip
    run_experiment(cfg, run_dir / "downstream")


def test_report_is_self_contained(report_page):
    page = report_page.read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href|poster|data)\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    assert refs, "the report shows no images"
    external = [r for r in refs if not r.startswith(("data:", "#"))]
    assert not external, f"external resources: {external[:3]}"
    assert not re.search(r"@import|url\(\s*['\"]?(?!data:)", page, flags=re.I)
    assert not re.search(r"<(script|link|iframe)\b[^>]*\b(src|href)=", page, flags=re.I)
    assert page.count("data:image/png;base64,") >= 4  # grids, curves, study plot
    assert "No sampler study yet" not in page and "Not evaluated yet" not in page
    # the noise-sample gallery (roughest generated and real samples) and the study's table
    assert 'alt="roughest generated"' in page and 'alt="roughest real"' in page
    assert "Noise samples (lag-1 semivariance above 3 x" in page
    assert "training images (floor)" in page and "<th>noise samples</th>" in page
    # the downstream experiment's tables: both tasks, the four training sets, the comparisons
    assert "No downstream experiment yet" not in page
    assert "<h3>recovery</h3>" in page and "<h3>detection</h3>" in page
    assert page.count("<td>real+generated</td>") == 2 and "<th>ROC AUC</th>" in page
    assert "generated beats physics:" in page
    assert "noise against the real training tiles" in page and "<td>held-out scenes</td>" in page


def test_report_renders_in_headless_chromium(report_page, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium) - render check skipped")
    from PIL import Image

    shot = tmp_path / "out.png"
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}", "--window-size=1200,3000", report_page.resolve().as_uri(),
    ]  # fmt: skip
    try:
        subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("Chromium did not finish rendering the report within 90 s")
    assert shot.is_file(), "Chromium wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (3000, 1200)
    assert img.std() > 10.0, f"screenshot looks blank (pixel std {img.std():.2f})"
    # figures fill a good part of the page, not a few lines of text on white
    assert (img < 200).mean() > 0.02
