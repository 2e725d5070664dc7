"""Configs: TOML round trip, overrides, validation with one-line errors, the recipes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from radardiff.config import (
    RunConfig,
    apply_overrides,
    dumps_config,
    load_config,
    save_config,
    valid_keys,
    validate_config,
)
from radardiff.config.recipes import tiny_config
from radardiff.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_round_trip_fills_every_default(tmp_path):
    cfg = RunConfig()
    save_config(cfg, tmp_path / "c.toml")
    back = load_config(tmp_path / "c.toml")
    assert back == cfg
    written = tomllib.loads((tmp_path / "c.toml").read_text())
    assert written["train"]["ema_halflife_kimg"] == [0.5]
    assert "val" not in written["data"]  # None is left out (TOML has no null)


def test_overrides_are_typed_and_validated():
    data = apply_overrides(
        {},
        ["train.lr=3e-4", "model.channel_mult=[1,2]", "sample.sampler=ddim", "train.compile=true"],
    )
    cfg = validate_config(data)
    assert cfg.train.lr == 3e-4 and cfg.model.channel_mult == (1, 2)
    assert cfg.sample.sampler == "ddim" and cfg.train.compile is True


def test_unknown_override_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        apply_overrides({}, ["train.lrr=1"])
    assert "unknown config key" in str(err.value) and "train.lr" in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[diffusion]\nschedul = 'linear'\n")
    with pytest.raises(ConfigError, match=r"c.toml: unknown config key 'diffusion.schedul'"):
        load_config(p)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("diffusion.prediction=epsilon", "diffusion.prediction"),
        ("train.batch_size=0", "train.batch_size"),
        ("model.image_size=30", "model"),
        ("train.mixed_precision=fp8", "train.mixed_precision"),
    ],
)
def test_invalid_values_are_refused(override, key):
    with pytest.raises(ConfigError) as err:
        validate_config(apply_overrides({}, [override]), "x.toml")
    assert key in str(err.value) and "\n" not in str(err.value)


def test_channel_mult_must_divide_image_size():
    with pytest.raises(ConfigError, match="not divisible"):
        validate_config({"model": {"image_size": 20, "channel_mult": [1, 2, 2, 2]}})


def test_valid_keys_cover_every_section():
    keys = valid_keys(RunConfig)
    assert "train.ema_halflife_kimg" in keys and "diffusion.variance" in keys and "name" in keys


def test_tiny_recipe_file_matches_the_builtin():
    assert load_config(CONFIGS / "tiny.toml") == tiny_config()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_recipe_loads(path):
    cfg = load_config(path)
    assert dumps_config(cfg)


def test_the_default_sampler_gets_its_default_options_and_no_other_does():
    """dpmsolver++ without options samples on Karras levels (the measured fast path); options
    given, even empty, are kept; another sampler gets none; the default prediction is v."""
    from radardiff.config.schema import DiffusionConfig, SampleConfig

    assert SampleConfig().options == {"use_karras_sigmas": True}
    assert SampleConfig(sampler="dpmsolver++", steps=10).options == {"use_karras_sigmas": True}
    assert SampleConfig(options={}).options == {}
    assert SampleConfig(options={"use_lu_lambdas": True}).options == {"use_lu_lambdas": True}
    assert SampleConfig(sampler="ddim").options == {}
    assert DiffusionConfig().prediction == "v"
    # speckle is judged at the pixel scale: the SAR recipes sample half stochastic, unclipped
    sar = {"sar_32.toml", "sar_64.toml"}
    for path in sorted(CONFIGS.glob("*.toml")):
        cfg = load_config(path)
        assert cfg.diffusion.prediction == "v", path.name
        if path.name in sar:
            assert cfg.sample.sampler == "dpmsolver++-hybrid", path.name
            assert cfg.sample.options == {"use_karras_sigmas": True, "eta": 0.5}, path.name
            assert (cfg.sample.steps, cfg.sample.clip) == (50, "none"), path.name
        else:
            assert cfg.sample.sampler == "dpmsolver++", path.name
            assert cfg.sample.options == {"use_karras_sigmas": True}, path.name


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_recipe_samples_with_a_sampler_that_serves_it(path):
    """A recipe's [sample] prepares as it is written: its sampler, options and steps on its own
    trained schedule (a typo in an option would otherwise wait for the first sample)."""
    from radardiff.diffusion.samplers import make_sampler

    cfg = load_config(path)
    prepared = make_sampler(cfg.sample.sampler, cfg.diffusion, cfg.sample.steps, cfg.sample.options)
    assert len(prepared.sigmas) == cfg.sample.steps + 1
    assert prepared.sigmas[-1] == 0.0 and np.all(np.diff(prepared.sigmas) < 0)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    """Files written through a temporary file get the mode a plain open() would give them
    (mkstemp alone makes them 0600), directories likewise (mkdtemp: 0700)."""
    import os
    import stat

    from radardiff._files import temp_dir_for
    from radardiff.config.io import atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.toml", "x = 1\n")
        d = temp_dir_for(tmp_path / "model")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.toml").stat().st_mode) == mode
    assert stat.S_IMODE(d.stat().st_mode) == mode | 0o111 & ~umask


def test_a_renamed_key_of_an_older_run_still_loads(tmp_path):
    """train.conv_weight_grad (runs of 2026-12-01 and 02) is read as train.conv_kernels; the new
    name wins where both are given; other sections are untouched."""
    from radardiff.config.io import load_config, validate_config

    path = tmp_path / "old.toml"
    path.write_text('[train]\nsteps = 3\nconv_weight_grad = "torch"\n', encoding="utf-8")
    cfg = load_config(path)
    assert cfg.train.conv_kernels == "torch" and cfg.train.steps == 3
    both = {"train": {"conv_weight_grad": "torch", "conv_kernels": "radardiff"}}
    assert validate_config(both).train.conv_kernels == "radardiff"
    with pytest.raises(ConfigError, match="unknown config key 'model.conv_weight_grad'"):
        validate_config({"model": {"conv_weight_grad": "torch"}})
