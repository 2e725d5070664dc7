"""The map-aware generators: DEM-stratified InSAR noise and SAR scenes over a label map."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli
from radardiff.data.dataset_file import DatasetFile
from radardiff.data.maps import MapChannel
from radardiff.data.synth import (
    GENERATORS,
    LAND_COVER,
    build_params,
    insar_noise_dem,
    sar_map,
    synthesize,
)
from radardiff.errors import ConfigError


def test_insar_noise_dem_file_has_dem_map_and_coefficients(tmp_path):
    path = synthesize("insar_noise_dem", 16, None, tmp_path / "d.h5", seed=4)
    with DatasetFile(path) as f:
        info = f.info
        assert (info.n, info.shape, info.kind, info.units) == (
            16,
            (1, 32, 32),
            "insar_noise",
            "rad",
        )
        assert info.maps == (MapChannel("dem", "m"),) and info.pixel_spacing_m == 100.0
        assert not info.has_labels and info.class_names is None
        dem, k = f.maps(), f.extra("strat_rad_per_m")
    assert dem.shape == (16, 1, 32, 32) and np.isfinite(dem).all()
    assert dem.min() >= 0.0 and (dem.max(axis=(1, 2, 3)) - dem.min(axis=(1, 2, 3)) >= 99).all()
    assert k.shape == (16,) and np.isfinite(k).all() and 1e-4 < np.abs(k).mean() < 1e-2


def test_sar_map_file_has_label_map(tmp_path):
    path = synthesize("sar_map", 16, 32, tmp_path / "s.h5", seed=4)
    with DatasetFile(path) as f:
        info = f.info
        assert (info.kind, info.units, info.pixel_spacing_m) == ("sar_backscatter", "linear", 20.0)
        assert info.maps == (MapChannel("land_cover", classes=LAND_COVER),)
        assert not info.has_labels
        assert {"land_texture", "water_db", "land_db"} <= set(info.extras)
        x, m = f.images(), f.maps()
        nu = f.extra("land_texture")
    assert m.shape == (16, 1, 32, 32) and np.isfinite(x).all() and (x > 0).all()
    assert set(np.unique(m)) <= {0.0, 1.0, 2.0} and (m == 1).any() and (m == 2).any()
    assert nu.shape == (16,) and ((nu >= 4) & (nu <= 10)).all()


@pytest.mark.parametrize("name", ["insar_noise_dem", "sar_map"])
def test_sample_depends_only_on_seed_and_index(tmp_path, monkeypatch, name):
    """A longer run extends a shorter one, and chunked writing equals one go (maps included)."""
    monkeypatch.setattr("radardiff.data.synth._chunk", lambda size: 256)  # two chunks below
    a = synthesize(name, 256, 16, tmp_path / "a.h5", seed=7)
    b = synthesize(name, 300, 16, tmp_path / "b.h5", seed=7)
    with DatasetFile(a) as fa, DatasetFile(b) as fb:
        np.testing.assert_array_equal(fa.images(), fb.images(slice(0, 256)))
        np.testing.assert_array_equal(fa.maps(), fb.maps(slice(0, 256)))
        extra = "strat_rad_per_m" if name == "insar_noise_dem" else "land_texture"
        np.testing.assert_array_equal(fa.extra(extra), fb.extra(extra)[:256])
    gen = insar_noise_dem if name == "insar_noise_dem" else sar_map
    whole = gen(300, 16, seed=7)
    with DatasetFile(b) as fb:
        np.testing.assert_array_equal(fb.images(), whole.images)


def test_sar_map_scene_mix():
    s = sar_map(256, 32, seed=1)
    land = (s.land_cover == 1).mean(axis=(1, 2, 3))
    ships = (s.land_cover == 2).any(axis=(1, 2, 3))
    assert (land == 0).mean() > 0.08 and (land > 0.7).any()  # all-water and mostly-land scenes
    assert 0.5 < ships.mean() < 0.95  # 0-6 ships, none on all-land scenes
    assert not np.isnan(s.images).any()
    db = build_params("sar_map", {"db": True})
    np.testing.assert_allclose(
        sar_map(4, 16, seed=1, params=db).images,
        10 * np.log10(sar_map(4, 16, seed=1).images),
        atol=1e-4,
    )


def test_map_generators_refuse_bad_parameters():
    with pytest.raises(ConfigError, match="atmosphere.strat_k"):
        build_params("insar_noise_dem", {"atmosphere.strat_k": 0.002})
    with pytest.raises(ConfigError, match="relief_m"):
        build_params("insar_noise_dem", {"relief_m": [0.0, 100.0]})
    with pytest.raises(ConfigError, match="land_fraction"):
        build_params("sar_map", {"land_fraction": [0.2, 1.5]})
    with pytest.raises(ConfigError, match="land_texture"):
        build_params("sar_map", {"land_texture": [0.0, 4.0]})
    p = build_params("insar_noise_dem", {"atmosphere.turb_std": 0.2, "strat_rad_per_m": 0.0})
    assert p.atmosphere.turb_std == 0.2 and p.strat_rad_per_m == 0.0


def test_cli_synth_map_kinds(tmp_path, capsys):
    code, out, err = run_cli(["data", "synth", "--help"], capsys)
    assert code == 0 and "insar_noise_dem" in out and "sar_map" in out
    out_file = tmp_path / "x.h5"
    code, out, err = run_cli(
        ["data", "synth", "insar_noise_dem", "--n", 8, "--out", out_file], capsys
    )
    assert code == 0, err
    with DatasetFile(out_file) as f:
        assert f.info.n == 8 and [c.name for c in f.info.maps] == ["dem"]
    assert set(GENERATORS) >= {"insar_noise_dem", "sar_map"}
