"""Metric ``maps``: the relation of images to their maps, generated against real, next to the
floor (two draws of one generator)."""

from __future__ import annotations

import pytest

from radardiff.config import EvalConfig
from radardiff.data.synth import synthesize
from radardiff.errors import DataError
from radardiff.evaluate.metrics import evaluate_files

MAPS = EvalConfig(metrics=("maps",))


def _scalars(real, fake, out):
    return evaluate_files(real, fake, MAPS, out)


def test_slope_on_the_dem_separates_a_generator_without_stratification(tmp_path):
    relief = {"relief_m": (800.0, 2000.0)}
    a = synthesize("insar_noise_dem", 96, 32, tmp_path / "a.h5", seed=0, params=relief)
    b = synthesize("insar_noise_dem", 96, 32, tmp_path / "b.h5", seed=1, params=relief)
    flat = synthesize("insar_noise_dem", 96, 32, tmp_path / "c.h5", seed=2,
                      params={**relief, "strat_rad_per_m": 0.0, "strat_std_rad_per_m": 0.0})  # fmt: skip
    floor = _scalars(a, b, tmp_path / "floor")
    off = _scalars(a, flat, tmp_path / "off")
    sec = floor["maps"]["continuous"]["dem"]
    assert sec["units"] == "m" and sec["real"]["n"] == 96
    # the generator's mean coefficient is 1e-3 rad/m: both draws recover it, the flat one 0
    assert floor["scalars"]["map_slope_median_real"] == pytest.approx(1e-3, abs=4e-4)
    assert abs(off["scalars"]["map_slope_median_fake"]) < 3e-4
    assert off["scalars"]["map_slope_w1"] > 2 * floor["scalars"]["map_slope_w1"]


def test_per_label_backscatter_against_a_smoother_land(tmp_path):
    a = synthesize("sar_map", 48, 32, tmp_path / "a.h5", seed=0)
    b = synthesize("sar_map", 48, 32, tmp_path / "b.h5", seed=1)
    smooth = synthesize("sar_map", 48, 32, tmp_path / "s.h5", seed=2,
                        params={"land_texture": (200.0, 200.0), "looks": 16})  # fmt: skip
    floor = _scalars(a, b, tmp_path / "floor")["scalars"]
    off = _scalars(a, smooth, tmp_path / "off")
    assert set(off["maps"]["labels"]["land_cover"]["real"]) == {"water", "land", "ship"}
    assert floor["map_label_enl_ratio"] == pytest.approx(1.0, abs=0.25)
    assert off["scalars"]["map_label_enl_ratio"] > 2.0  # speckle of 16 looks, no texture
    assert off["scalars"]["map_label_k2_error"] > 3 * floor["map_label_k2_error"]


def test_sets_without_a_shared_map_are_refused(tmp_path):
    a = synthesize("insar_noise_dem", 8, 32, tmp_path / "a.h5", seed=0)
    b = synthesize("insar_noise", 8, 32, tmp_path / "b.h5", seed=1)
    with pytest.raises(DataError, match="share no map"):
        _scalars(a, b, tmp_path / "x")
    assert not (tmp_path / "x" / "metrics.json").exists()
