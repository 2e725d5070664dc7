"""``inspect``: exact statistics against NumPy, class counts, no data, preview grid, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from radardiff.cli.data_io import inspect_cmd
from radardiff.data.dataset_file import write_dataset
from radardiff.data.inspect import NAN_RGB, RANGE_PERCENTILES, VALUE_PERCENTILES, inspect
from radardiff.data.prepare import prepare
from radardiff.errors import DataError

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "pyrate_envisat_unw"


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(30, 1, 6, 5)) * 3 + 1000).astype(np.float32)  # offset: tests stability
    x[3, 0, :2] = np.nan
    x[7] = np.nan  # an all-NaN sample
    labels = np.array([i % 3 for i in range(30)])
    labels[:4] = 2
    path = write_dataset(
        tmp_path / "d.h5",
        x,
        labels,
        kind="insar_noise",
        units="rad",
        class_names=["a", "b", "c"],
        pixel_spacing_m=90.0,
    )
    return path, x, labels


def test_statistics_match_numpy(dataset):
    path, x, labels = dataset
    r = inspect(path, block=7)  # blocks that do not divide N
    v = x[np.isfinite(x)].astype(np.float64)
    assert (r.n, r.shape, r.kind, r.units) == (30, (1, 6, 5), "insar_noise", "rad")
    assert r.pixel_spacing_m == 90.0
    assert r.value_min == v.min() and r.value_max == v.max()
    assert r.mean == pytest.approx(v.mean(), rel=1e-12)
    assert r.std == pytest.approx(v.std(), rel=1e-9)
    assert r.percentiles_exact
    for q, p in zip(VALUE_PERCENTILES, np.percentile(v, VALUE_PERCENTILES), strict=True):
        assert r.percentiles[q] == pytest.approx(p)
    assert r.nan_fraction == pytest.approx(np.isnan(x).mean())
    assert r.n_all_nan == 1
    ranges = np.array([np.nanmax(s) - np.nanmin(s) for i, s in enumerate(x) if i != 7])
    for q, p in zip(RANGE_PERCENTILES, np.percentile(ranges, RANGE_PERCENTILES), strict=True):
        assert r.range_percentiles[q] == pytest.approx(p)
    assert r.class_counts == {n: int((labels == k).sum()) for k, n in enumerate("abc")}
    text = r.to_text()
    assert "samples     30" in text and "a: " in text and "1 all-NaN" in text


def test_subsampled_percentiles(dataset):
    path, x, _ = dataset
    r = inspect(path, max_values=300, seed=1)
    v = x[np.isfinite(x)]
    assert not r.percentiles_exact
    assert r.percentiles[50.0] == pytest.approx(np.median(v), abs=0.6)  # 0.2 sigma
    assert r.value_min == v.min()  # min/max stay exact


def test_preview_grid(dataset, tmp_path):
    path, x, labels = dataset
    r = inspect(path, preview=tmp_path / "p" / "grid.png")
    img = np.asarray(Image.open(r.preview))
    # 3 classes -> 3 rows; up to 8 per class; 6x5 tiles zoomed to >= 64 px (x11)
    zoom = math.ceil(64 / 6)
    assert img.shape == (3 * (6 * zoom + 2) + 2, 8 * (5 * zoom + 2) + 2, 3)
    assert (img.reshape(-1, 3) == NAN_RGB).all(axis=1).any()


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        inspect(tmp_path / "none.h5")
    (tmp_path / "bad.h5").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"bad\.h5: not a readable HDF5"):
        inspect(tmp_path / "bad.h5")


def test_cli_inspect(dataset, tmp_path):
    path, _, labels = dataset
    runner = CliRunner()
    r = runner.invoke(inspect_cmd, [str(path)])
    assert r.exit_code == 0 and "kind        insar_noise" in r.output
    r = runner.invoke(inspect_cmd, [str(path), "--json"])
    assert json.loads(r.output)["class_counts"]["c"] == (labels == 2).sum() == 13
    assert "radardiff data inspect" in runner.invoke(inspect_cmd, ["--help"]).output


@pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real interferograms not present at {REALDATA}")
def test_real_interferograms(tmp_path):
    import tifffile

    prepare(REALDATA, tmp_path / "w.h5", nodata=0)
    raws = np.stack([tifffile.imread(p) for p in sorted(REALDATA.glob("geo_*_unw.tif"))])
    r = inspect(tmp_path / "w.h5")
    v = raws[raws != 0]
    assert r.nan_fraction == pytest.approx((raws == 0).mean())
    assert (r.value_min, r.value_max) == (v.min(), v.max())
    assert r.units == "rad" and r.kind == "insar_unwrapped"


def test_preview_must_be_named_png(tmp_path):
    from radardiff.data.inspect import inspect
    from radardiff.errors import DataError

    data = write_dataset(tmp_path / "d.h5", np.zeros((2, 1, 8, 8)), kind="generic", units="")
    with pytest.raises(DataError, match=r"p.h5: the preview is a PNG picture"):
        inspect(data, preview=tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()
