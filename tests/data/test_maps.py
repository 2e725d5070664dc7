"""Maps beside the images: the dataset file's ``maps``, ``data prepare --map`` and the encoder
that puts maps into a network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import run_cli
from radardiff.data.dataset_file import DatasetFile, write_dataset
from radardiff.data.map_sources import parse_map_specs
from radardiff.data.maps import MapChannel, MapEncoder, check_maps, select_channels
from radardiff.data.prepare import prepare
from radardiff.data.scenes import write_scene_subset
from radardiff.errors import ConfigError, DataError

LAND = MapChannel("land", classes=("water", "land", "ship"))
DEM = MapChannel("dem", "m")


def _tif(path: Path, data: np.ndarray, x0: float = 10.0, step: float = 0.001, nodata=None):
    """A float GeoTIFF with a tiepoint at (x0, 50) and square pixels of ``step`` degrees."""
    tags = [
        (33550, "d", 3, (step, step, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, x0, 50.0, 0.0), True),
        (34735, "H", 8, (1, 1, 0, 1, 1024, 0, 1, 2), True),
    ]
    if nodata is not None:
        tags.append((42113, "s", 0, str(nodata), True))
    tifffile.imwrite(path, data, extratags=tags)
    return path


def _stack(tmp_path: Path, n: int = 3, size: int = 24):
    """``n`` scenes with a no-data corner, and a DEM on their grid."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "ifgs"
    folder.mkdir()
    for i in range(n):
        img = rng.normal(size=(size, size)).astype(np.float32)
        img[:4, :4] = 0.0  # no data
        _tif(folder / f"scene_{i}_unw.tif", img, nodata=0)
    dem = (100 + np.arange(size * size, dtype=np.float32).reshape(size, size)).astype(np.float32)
    return folder, _tif(tmp_path / "dem.tif", dem), dem


def test_maps_round_trip_and_refusals(tmp_path):
    x = np.random.default_rng(1).normal(size=(4, 1, 8, 8)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    maps = np.zeros((4, 2, 8, 8), np.float32)
    maps[:, 0] = np.arange(64).reshape(8, 8) % 3
    maps[:, 1] = 250.0
    maps[0, 1, 0, 0] = np.nan  # under the image's no data: allowed
    write_dataset(tmp_path / "a.h5", x, kind="generic", units="x", maps=maps,
                  map_channels=[LAND, DEM])  # fmt: skip
    f = DatasetFile(tmp_path / "a.h5")
    assert f.info.maps == (LAND, DEM) and "maps" not in f.info.extras
    np.testing.assert_array_equal(f.maps([3, 1]), maps[[3, 1]])
    bad = maps.copy()
    bad[1, 1, 2, 2] = np.nan  # where the image has data
    with pytest.raises(DataError, match="map 'dem' has no data .* at 1 pixel"):
        check_maps(bad, x, [LAND, DEM], "f.h5")
    bad = maps.copy()
    bad[2, 0, 0, 1] = 3.0
    with pytest.raises(DataError, match="label map 'land' holds 3, not a class index 0..2"):
        check_maps(bad, x, [LAND, DEM], "f.h5")
    with pytest.raises(DataError, match="a map must be on the image's grid"):
        check_maps(maps[:, :, :4], x, [LAND, DEM], "f.h5")


def test_select_channels_checks_classes_and_units():
    have = (LAND, DEM)
    assert select_channels(have, ["dem", "land"], "f") == [1, 0]
    with pytest.raises(DataError, match="no map 'coh'"):
        select_channels(have, ["coh"], "f")
    other = MapChannel("land", classes=("water", "land"))
    with pytest.raises(DataError, match=r"classes \['water', 'land', 'ship'\], but the model"):
        select_channels(have, [other], "f")
    with pytest.raises(DataError, match="is in m, but the model was trained on km"):
        select_channels(have, [MapChannel("dem", "km")], "f")


def test_encoder_one_hot_standardised_and_presence():
    maps = np.zeros((2, 2, 2, 2), np.float32)
    maps[:, 0] = [[0, 1], [2, 1]]
    maps[0, 1] = [[1, 3], [5, 7]]
    maps[1, 1] = [[9, 11], [13, np.nan]]
    enc = MapEncoder.fit("f", (LAND, DEM), lambda sl: maps[sl], ["land", "dem"], 2)
    mean, std = enc.moments[1]
    valid = maps[:, 1][np.isfinite(maps[:, 1])]
    assert mean == pytest.approx(valid.mean()) and std == pytest.approx(valid.std())
    assert enc.width == 3 + 1 + 1
    planes = enc.encode(maps)
    np.testing.assert_array_equal(planes[0, 0], [[1, 0], [0, 0]])  # water
    np.testing.assert_array_equal(planes[0, 2], [[0, 0], [1, 0]])  # ship
    np.testing.assert_allclose(planes[0, 3], (maps[0, 1] - mean) / std, rtol=1e-6)
    assert planes[1, 3, 1, 1] == 0.0  # no data
    assert (planes[:, 4] == 1).all()  # presence
    assert MapEncoder.from_dict(enc.to_dict()) == enc


def test_prepare_tiles_the_dem_with_each_scene(tmp_path):
    folder, dem_path, dem = _stack(tmp_path)
    out = tmp_path / "t.h5"
    r = prepare(folder, out, tile=8, stride=8, maps=parse_map_specs([f"dem={dem_path}"]))
    f = DatasetFile(out)
    assert r.maps == (MapChannel("dem", "m"),) and f.info.maps == r.maps
    # the no-data corner tile (all NaN top-left 4x4 of 64 = 25 %) is kept; 9 tiles per scene
    assert f.info.n == 27
    tiles = [dem[y : y + 8, x : x + 8] for y in (0, 8, 16) for x in (0, 8, 16)]
    np.testing.assert_array_equal(f.maps()[:, 0], np.stack(tiles * 3))
    assert f.attrs()["map_channels"]
    first = Path(json.loads(f.attrs()["items"])[0]).name
    sub = write_scene_subset(out, [first], tmp_path / "sub.h5")
    g = DatasetFile(sub)
    assert g.info.maps == f.info.maps
    np.testing.assert_array_equal(g.maps(), f.maps(slice(0, 9)))


def test_prepare_per_scene_label_maps_with_codes(tmp_path):
    folder, _, _ = _stack(tmp_path, n=2, size=16)
    masks = tmp_path / "masks"
    masks.mkdir()
    codes = np.array([0, 1, 255], np.uint8)
    for i in range(2):
        lab = codes[(np.arange(256).reshape(16, 16) + i) % 3]
        tifffile.imwrite(masks / f"scene_{i}_unw.tif", lab)
    specs = parse_map_specs([f"land={masks}"], classes=["land=0:water,1:land,255:ship"])
    prepare(folder, tmp_path / "l.h5", tile=16, maps=specs, resize=8)
    f = DatasetFile(tmp_path / "l.h5")
    assert f.info.maps[0].classes == ("water", "land", "ship")
    assert set(np.unique(f.maps())) <= {0.0, 1.0, 2.0}  # nearest neighbour: no mixed classes
    (masks / "scene_1_unw.tif").unlink()
    with pytest.raises(DataError, match="no map 'land' named like .*scene_1_unw.tif"):
        prepare(folder, tmp_path / "m.h5", tile=16, maps=specs)
    assert not (tmp_path / "m.h5").exists()


def test_prepare_refuses_maps_off_the_grid_or_with_holes(tmp_path):
    folder, _, dem = _stack(tmp_path)
    shifted = _tif(tmp_path / "shifted_dem.tif", dem, x0=10.5)
    with pytest.raises(DataError, match="on another grid than"):
        prepare(folder, tmp_path / "a.h5", tile=8, maps=parse_map_specs([f"dem={shifted}"]))
    small = _tif(tmp_path / "small_dem.tif", dem[:20])
    with pytest.raises(DataError, match="is 20 x 24 pixels but .* is 24 x 24"):
        prepare(folder, tmp_path / "a.h5", tile=8, maps=parse_map_specs([f"dem={small}"]))
    holes = dem.copy()
    holes[10, 10] = -9999
    holed = _tif(tmp_path / "holed_dem.tif", holes, nodata=-9999)
    with pytest.raises(DataError, match="map 'dem' has no data .* where the image has data"):
        prepare(folder, tmp_path / "a.h5", tile=8, maps=parse_map_specs([f"dem={holed}"]))
    assert not list(tmp_path.glob("a*.h5"))
    with pytest.raises(ConfigError, match="--map-classes: 'x' is not a map given by --map"):
        parse_map_specs(["dem=d.tif"], classes=["x=a,b"])


def test_cli_prepare_with_a_map_and_inspect(tmp_path, capsys):
    folder, dem_path, _ = _stack(tmp_path)
    out = tmp_path / "c.h5"
    code, stdout, _ = run_cli(["data", "prepare", folder, "--tile", "8", "--map",
                               f"dem={dem_path}", "--out", out], capsys)  # fmt: skip
    assert code == 0 and "maps: dem (m)" in stdout
    code, stdout, _ = run_cli(["data", "inspect", out], capsys)
    assert code == 0 and "map         dem: min 100  max 675" in stdout
    code, _, err = run_cli(["data", "prepare", folder, "--tile", "8", "--map",
                            f"dem={tmp_path / 'nowhere.tif'}", "--out", tmp_path / "d.h5"],
                           capsys)  # fmt: skip
    last = err.strip().splitlines()[-1]
    assert code != 0 and not (tmp_path / "d.h5").exists()
    assert last.startswith("radardiff: error: --map dem: ") and "nowhere.tif" in last
