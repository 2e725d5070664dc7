"""Checkpoints are verified when loaded: every file's SHA-256 and the run's network and diffusion
settings are recorded in ``manifest.json`` when a checkpoint is written; damaged weights (bytes
overwritten in place, same size: they once sampled all-NaN images with exit 0), a missing file or
an edited ``config.toml`` are refused in one line instead of used."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from radardiff.config import load_config
from radardiff.errors import RunDirError
from radardiff.models.run import MANIFEST, load_run
from radardiff.train import train


@pytest.fixture
def run(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def _latest(run):
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def test_a_checkpoint_records_every_file_and_the_architecture(run):
    ckpt = _latest(run)
    doc = json.loads((ckpt / MANIFEST).read_text())
    files = {str(p.relative_to(ckpt)) for p in ckpt.rglob("*") if p.is_file()}
    assert set(doc["sha256"]) == files - {MANIFEST, "state.json"}
    assert doc["architecture"]["model"]["image_size"] == 16
    load_run(run)  # verified and loaded


@pytest.mark.parametrize("which", ["ema", "model"])
def test_weights_overwritten_in_place_are_refused(run, which):
    path = _latest(run) / which / "diffusion_pytorch_model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # same size, header intact
    path.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match=r"diffusion_pytorch_model.safetensors: damaged or"):
        load_run(run, weights=which)


def test_resume_refuses_damaged_weights_and_optimizer_state(run, noise_files):
    cfg = load_config(run / "config.toml")
    more = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 6})})
    opt = _latest(run) / "optimizer.pt"
    data = bytearray(opt.read_bytes())
    data[-100] ^= 0xFF
    opt.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match=r"optimizer.pt: damaged or changed"):
        train(more, run, resume=True)


def test_a_missing_weights_file_is_refused(run):
    (_latest(run) / "ema" / "config.json").unlink()
    with pytest.raises(RunDirError, match=r"ema/config.json: missing from its checkpoint"):
        load_run(run)


def test_an_edited_architecture_is_refused(run):
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("image_size = 16", "image_size = 32"))
    with pytest.raises(RunDirError, match=r"model.image_size differ from the settings"):
        load_run(run)


def test_edited_diffusion_settings_are_refused(run):
    text = (run / "config.toml").read_text()
    assert "timesteps = 50" in text
    (run / "config.toml").write_text(text.replace("timesteps = 50", "timesteps = 40"))
    with pytest.raises(RunDirError, match=r"diffusion.timesteps differ .* = 50 there, 40 here"):
        load_run(run)


def test_an_older_checkpoint_without_a_manifest_loads_with_a_warning(run, caplog):
    (_latest(run) / MANIFEST).unlink()
    with caplog.at_level(logging.WARNING, logger="radardiff"):
        load_run(run)
    assert "no manifest.json" in caplog.text and "cannot be checked" in caplog.text
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("image_size = 16", "image_size = 32"))
    with pytest.raises(RunDirError, match=r"model.image_size = 32 but the network"):
        load_run(run)  # without a record, the network's own size still decides


def test_a_setting_newer_than_the_checkpoint_is_read_at_its_default(run):
    """A checkpoint written before a setting existed (model.maps, say) does not record it: it
    loads while the setting keeps its default, and is refused when the config changes it."""
    path = _latest(run) / MANIFEST
    doc = json.loads(path.read_text())
    for key in ("maps", "map_dropout"):
        doc["architecture"]["model"].pop(key)
    path.write_text(json.dumps(doc))
    load_run(run)
    text = (run / "config.toml").read_text()
    assert "maps = []" in text
    (run / "config.toml").write_text(text.replace("maps = []", 'maps = ["dem"]', 1))
    with pytest.raises(RunDirError, match=r"model.maps differ .* = \[\] there, \['dem'\] here"):
        load_run(run)
