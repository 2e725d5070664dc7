"""Scene records of prepared files, acquisition dates, date-disjoint splits, scene subsets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radardiff.data.dataset_file import DatasetFile, write_dataset
from radardiff.data.prepare import prepare
from radardiff.data.scenes import (
    acquisition_dates,
    date_disjoint,
    draw_scenes,
    read_scenes,
    write_scene_subset,
)
from radardiff.errors import DataError

NAMES = ["geo_060619-061002_unw", "geo_061002-070219_unw", "geo_070326-070917_unw"]


def _stack(tmp_path):
    """Three scenes of different sizes (9, 6 and 4 tiles of 4 px), each pixel its scene's
    number times 1000 plus its position, saved as GeoTIFF files named by their dates."""
    import tifffile

    folder = tmp_path / "ifgs"
    folder.mkdir()
    for k, (name, shape) in enumerate(zip(NAMES, [(12, 12), (8, 12), (8, 8)], strict=True)):
        img = 1000.0 * k + np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
        tifffile.imwrite(folder / f"{name}.tif", img)
    return folder


def test_acquisition_dates_of_common_names():
    assert acquisition_dates("geo_060619-061002_unw.tif") == ("20060619", "20061002")
    assert acquisition_dates("20200113_20200101.geo.unw.tif") == ("20200101", "20200113")
    assert acquisition_dates("S1_20200101_20200113_VV") == ("20200101", "20200113")
    assert acquisition_dates("ers_950101-960101") == ("19950101", "19960101")
    assert acquisition_dates("scene_12.tif") == ()
    assert acquisition_dates("id_1234567890") == ()  # no date inside a longer number


def test_date_disjoint_drops_every_scene_sharing_a_test_date():
    train = ["a_20200101_20200113", "b_20200113_20200125", "c_20200125_20200206"]
    test = ["t_20200206_20200218"]
    split = date_disjoint(train, test)
    assert split.kept == train[:2] and split.dropped == train[2:]
    assert split.test_dates == ["20200206", "20200218"]
    assert date_disjoint(train, ["t_20200113_20200206"]).kept == []
    with pytest.raises(DataError, match="no acquisition date in the scene name 'x'"):
        date_disjoint(train, ["x"])


def test_draw_scenes_distinct_subsets():
    names = list("abcde")
    two = draw_scenes(names, 2, 3, seed=1)
    assert len(two) == 3 and len({tuple(s) for s in two}) == 3
    assert all(len(s) == 2 and s == sorted(s) for s in two)
    assert draw_scenes(names, 5, 3) == [names]  # one subset of all the scenes exists
    assert draw_scenes(names, 2, 3, seed=1) == two  # seeded
    with pytest.raises(DataError, match="between 1 and 5"):
        draw_scenes(names, 6, 1)


def test_prepare_records_each_tiles_scene_and_subsets_round_trip(tmp_path):
    res = prepare(_stack(tmp_path), tmp_path / "s.h5", tile=4, kind="insar_unwrapped", units="rad")
    scenes = read_scenes(res.outputs[0].path)
    names = [f"{n}.tif" for n in NAMES]
    assert scenes.names == names
    assert scenes.counts() == {names[0]: 9, names[1]: 6, names[2]: 4}
    with DatasetFile(res.outputs[0].path) as f:
        x = f.images()
    # each tile's values tell its scene: the record must agree
    np.testing.assert_array_equal(x[:, 0, 0, 0] // 1000, scenes.index)
    out = write_scene_subset(res.outputs[0].path, [names[2], names[0]], tmp_path / "sub.h5")
    sub = read_scenes(out)
    assert sub.names == [names[0], names[2]]  # the source's order
    with DatasetFile(out) as f:
        np.testing.assert_array_equal(f.images(), x[np.isin(scenes.index, [0, 2])])
        assert json.loads(f.attrs()["items"]) == sub.names
    np.testing.assert_array_equal(sub.index, [0] * 9 + [1] * 4)
    with pytest.raises(DataError, match="no scene 'nope'"):
        write_scene_subset(res.outputs[0].path, ["nope"], tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_a_file_without_scene_record_is_refused(tmp_path):
    path = write_dataset(tmp_path / "plain.h5", np.zeros((2, 1, 4, 4), np.float32),
                         kind="insar_unwrapped", units="rad")  # fmt: skip
    with pytest.raises(DataError, match="no record of each tile's scene"):
        read_scenes(path)
