"""``prepare``: values, tiles, splits, labels, no data, bad input, atomic output, the CLI."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from radardiff.cli.data_io import prepare_cmd
from radardiff.data.dataset_file import DatasetFile, DatasetWriter
from radardiff.data.prepare import (
    parse_split,
    prepare,
    resize_nan,
    split_assignment,
    split_counts,
    tiles,
    to_db,
)
from radardiff.errors import ConfigError, DataError

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "pyrate_envisat_unw"
needs_realdata = pytest.mark.skipif(
    not REALDATA.is_dir(), reason=f"real interferograms not present at {REALDATA}"
)


def png_folder(tmp_path: Path, n: int = 20, size: int = 8) -> tuple[Path, dict[bytes, int]]:
    """MNIST layout; returns a map from image bytes to its class, to find images in outputs."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "png"
    folder.mkdir()
    content = {}
    for i in range(n):
        img = rng.integers(0, 256, (size, size), dtype=np.uint8)
        cls = i % 4
        Image.fromarray(img).save(folder / f"{cls}_{i:04d}.png")
        content[img.astype(np.float32).tobytes()] = cls
    return folder, content


def test_split_counts_and_assignment():
    assert split_counts(10, (0.8, 0.1, 0.1)).tolist() == [8, 1, 1]
    assert split_counts(17, (0.8, 0.1, 0.1)).tolist() == [13, 2, 2]
    assert split_counts(3, (0.5, 0.5)).sum() == 3
    a = split_assignment(100, (0.7, 0.2, 0.1), seed=3)
    assert np.bincount(a).tolist() == [70, 20, 10]
    assert np.array_equal(a, split_assignment(100, (0.7, 0.2, 0.1), seed=3))
    assert not np.array_equal(a, split_assignment(100, (0.7, 0.2, 0.1), seed=4))
    assert parse_split("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.8,0.3", "1", "a,b", "0.5,-0.5,1"):
        with pytest.raises(ConfigError, match="--split"):
            parse_split(bad)


def test_prepare_png_split_labels_round_trip(tmp_path):
    folder, content = png_folder(tmp_path)
    res = prepare(folder, tmp_path / "mnist.h5", split=(0.6, 0.2, 0.2), seed=1, batch_size=3)
    assert [o.name for o in res.outputs] == ["train", "val", "test"]
    assert [o.n for o in res.outputs] == [12, 4, 4]
    assert res.class_names == ["0", "1", "2", "3"] and res.shape == (1, 8, 8)
    seen = set()
    for o in res.outputs:
        assert o.path == tmp_path / f"mnist_{o.name}.h5"
        with DatasetFile(o.path) as ds:
            assert ds.info.class_names == ["0", "1", "2", "3"] and ds.info.units == "dn"
            for img, lab in zip(ds.images(), ds.labels(), strict=True):
                key = img.tobytes()
                assert content[key] == lab  # image values and label survive together
                seen.add(key)
            counts = np.bincount(ds.labels(), minlength=4)
            assert o.class_counts == {str(k): int(c) for k, c in enumerate(counts) if c}
    assert seen == set(content)  # every image in exactly one split
    assert not list(tmp_path.glob(".*partial"))
    # the same seed gives the same split
    res2 = prepare(folder, tmp_path / "again.h5", split=(0.6, 0.2, 0.2), seed=1)
    with DatasetFile(res.outputs[1].path) as a, DatasetFile(res2.outputs[1].path) as b:
        np.testing.assert_array_equal(a.images(), b.images())


def test_tiles_match_source_pixels(tmp_path):
    scene = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    tifffile.imwrite(tmp_path / "scene.tif", scene)
    res = prepare(tmp_path / "scene.tif", tmp_path / "t.h5", tile=8, stride=5)
    ys, xs = range(0, 13, 5), range(0, 23, 5)
    assert res.n_written == len(ys) * len(xs) == 15
    with DatasetFile(tmp_path / "t.h5") as ds:
        got = ds.images()
    k = 0
    for y in ys:
        for x in xs:
            np.testing.assert_array_equal(got[k, 0], scene[y : y + 8, x : x + 8])
            k += 1
    assert [c.shape for _, _, c in tiles(scene[None], 8, 5)] == [(1, 8, 8)] * 15


def test_max_nan_fraction_and_all_nan(tmp_path):
    scene = np.ones((8, 16), np.float32)
    scene[:, :8] = -1.0  # left tile: no data
    scene[:3, 8:] = -1.0  # right tile: 3/8 no data
    tifffile.imwrite(tmp_path / "s.tif", scene)
    res = prepare(tmp_path / "s.tif", tmp_path / "a.h5", tile=8, nodata=-1)
    assert res.n_written == 1 and res.skipped_all_nan == 1
    with DatasetFile(tmp_path / "a.h5") as ds:
        assert np.isnan(ds.images()).mean() == pytest.approx(3 / 8)
    with pytest.raises(DataError, match=r"s\.tif: every sample has more than 0.3 no-data"):
        prepare(tmp_path / "s.tif", tmp_path / "b.h5", tile=8, nodata=-1, max_nan_fraction=0.3)
    with pytest.raises(DataError, match=r"nan\.npy: every sample is all NaN"):
        prepare(_all_nan_scene(tmp_path), tmp_path / "c.h5")
    assert not (tmp_path / "b.h5").exists() and not (tmp_path / "c.h5").exists()
    assert not list(tmp_path.glob(".*partial"))


def _all_nan_scene(tmp_path: Path) -> Path:
    p = tmp_path / "nan.npy"
    np.save(p, np.full((2, 4, 4), np.nan, np.float32))
    return p


def test_all_nan_sample_skipped_with_count(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 4, 4)).astype(np.float32)
    x[2] = np.nan
    np.save(tmp_path / "x.npy", x)
    res = prepare(tmp_path / "x.npy", tmp_path / "x.h5")
    assert res.n_written == 4 and res.skipped_all_nan == 1
    with DatasetFile(tmp_path / "x.h5") as ds:
        np.testing.assert_array_equal(ds.images()[:, 0], np.delete(x, 2, axis=0))


def test_only_nan_tiles_error(tmp_path):
    scene = np.full((8, 8), np.nan, np.float32)
    scene[0, 0] = 1.0
    tifffile.imwrite(tmp_path / "s.tif", scene)
    with pytest.raises(DataError, match="more than 0.5 no-data"):
        prepare(tmp_path / "s.tif", tmp_path / "o.h5", tile=4)


def test_mixed_shapes_and_resize(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 10, np.uint8)).save(folder / "a_1.png")
    Image.fromarray(np.full((16, 12), 20, np.uint8)).save(folder / "b_2.png")
    with pytest.raises(DataError, match=r"b_2\.png: size \(16, 12\) differs from \(8, 8\)"):
        prepare(folder, tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()
    res = prepare(folder, tmp_path / "m.h5", resize=4)
    with DatasetFile(res.outputs[0].path) as ds:
        np.testing.assert_allclose(ds.images()[:, 0, 0, 0], [10, 20], atol=1e-4)
        assert ds.info.shape == (1, 4, 4)


def test_resize_nan_aware():
    x = np.tile(np.arange(8, dtype=np.float32), (8, 1))[None]
    y = resize_nan(x, (4, 4))
    # antialiased 2x reduction of a linear ramp: a symmetric filter gives 2k + 0.5 inside
    # (edges are renormalised over the clipped support, symmetric about the centre)
    np.testing.assert_allclose(y[0, :, 1:3], np.tile([2.5, 4.5], (4, 1)), atol=1e-5)
    np.testing.assert_allclose(y[0, :, 0] + y[0, :, 3], 7.0, atol=1e-5)
    x2 = np.full((1, 8, 8), 5.0, np.float32)
    x2[0, :, :4] = np.nan
    y2 = resize_nan(x2, (4, 4))
    assert np.isnan(y2[0, :, :2]).all() and np.allclose(y2[0, :, 2:], 5.0)


def test_db_conversion(tmp_path):
    x = np.array([[[1.0, 10.0], [0.01, 0.0]]], np.float32)
    np.testing.assert_allclose(to_db(x)[0, :, :], [[0.0, 10.0], [-20.0, np.nan]], atol=1e-5)
    np.save(tmp_path / "s.npy", np.broadcast_to(x, (3, 1, 2, 2)).copy())
    res = prepare(tmp_path / "s.npy", tmp_path / "db.h5", db=True, kind="sar_backscatter")
    assert res.units == "dB" and res.kind == "sar_backscatter"
    with DatasetFile(tmp_path / "db.h5") as ds:
        assert ds.info.units == "dB" and np.isnan(ds.images()[:, 0, 1, 1]).all()


def test_db_refused_on_values_already_in_db(tmp_path):
    """BigEarthNet-S1 patches are dB already (mostly negative): --db would take the log of
    negative values and leave almost nothing; it is refused with one line, nothing written."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "db.npy", rng.normal(-15.0, 4.0, (3, 1, 8, 8)).astype(np.float32))
    with pytest.raises(DataError, match=r"db.npy.*--db: 100 % of the values are negative") as err:
        prepare(tmp_path / "db.npy", tmp_path / "o.h5", db=True)
    assert "\n" not in str(err.value) and "drop --db" in str(err.value)
    assert not list(tmp_path.glob("o*.h5*"))
    # a linear image with a few negative pixels (noise subtraction) still converts
    lin = rng.gamma(1.0, 0.05, (3, 1, 8, 8)).astype(np.float32)
    lin[:, 0, 0, :2] = -1e-4
    np.save(tmp_path / "lin.npy", lin)
    res = prepare(tmp_path / "lin.npy", tmp_path / "l.h5", db=True)
    # dB of intensities is backscatter even when the files say nothing (untagged chips), so
    # the SAR metrics and to_db = "auto" know it; a kind given still wins
    assert (res.units, res.kind) == ("dB", "sar_backscatter")
    assert (
        prepare(tmp_path / "lin.npy", tmp_path / "g.h5", db=True, kind="generic").kind == "generic"
    )


def test_hdf5_labels_round_trip(tmp_path):
    folder = tmp_path / "h5"
    folder.mkdir()
    for i in range(6):
        with h5py.File(folder / f"{i}.h5", "w") as h5:
            h5["real_data"] = np.full((4, 4), float(i))
            h5["label"] = i % 3
    res = prepare(folder, tmp_path / "o.h5", label_key="label", split=(0.5, 0.5), seed=0)
    for o in res.outputs:
        with DatasetFile(o.path) as ds:
            vals = ds.images()[:, 0, 0, 0].astype(int)
            np.testing.assert_array_equal(ds.labels(), vals % 3)


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    folder, _ = png_folder(tmp_path, n=10)
    out = tmp_path / "out" / "d.h5"
    calls = {"n": 0}
    original = DatasetWriter.append

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(DatasetWriter, "append", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare(folder, out, batch_size=2, split=(0.5, 0.5))
    assert list(out.parent.iterdir()) == []


def test_batches_are_bounded(tmp_path, monkeypatch):
    folder, _ = png_folder(tmp_path, n=11)
    sizes = []
    original = DatasetWriter.append

    def spy(self, images, *a, **k):
        sizes.append(len(images))
        return original(self, images, *a, **k)

    monkeypatch.setattr(DatasetWriter, "append", spy)
    prepare(folder, tmp_path / "b.h5", batch_size=4)
    assert sizes == [4, 4, 3]


def test_bad_options(tmp_path):
    folder, _ = png_folder(tmp_path, n=2)
    with pytest.raises(ConfigError, match="--stride: needs --tile"):
        prepare(folder, tmp_path / "x.h5", stride=4)
    with pytest.raises(ConfigError, match="--kind"):
        prepare(folder, tmp_path / "x.h5", kind="optical")
    with pytest.raises(ConfigError, match="--max-nan"):
        prepare(folder, tmp_path / "x.h5", max_nan_fraction=2)


def test_cli_prepare(tmp_path):
    folder, _ = png_folder(tmp_path, n=10)
    runner = CliRunner()
    out = tmp_path / "c.h5"
    r = runner.invoke(prepare_cmd, [str(folder), "--out", str(out), "--split", "0.8,0.2"])
    assert r.exit_code == 0, r.output
    assert "c_train.h5: 8 samples" in r.output and "c_val.h5: 2 samples" in r.output
    r = runner.invoke(prepare_cmd, [str(folder), "--out", str(out), "--resize", "0x3"])
    assert r.exit_code == 2 and "--resize" in r.output
    r = runner.invoke(prepare_cmd, [str(tmp_path / "nope"), "--out", str(out)])
    assert isinstance(r.exception, DataError) and "no such file or folder" in str(r.exception)
    help_text = runner.invoke(prepare_cmd, ["--help"]).output
    assert "radardiff data prepare" in help_text


@needs_realdata
def test_real_interferograms_tiles_and_split(tmp_path):
    files = sorted(REALDATA.glob("geo_*_unw.tif"))
    res = prepare(
        REALDATA,
        tmp_path / "unw.h5",
        nodata=0,
        tile=32,
        stride=16,
        max_nan_fraction=1.0,
        split=(0.8, 0.1, 0.1),
        seed=0,
    )
    # 72 x 47 scenes: rows 0, 16, 32 and column 0 -> 3 tiles per scene; split by scene 13/2/2
    assert [o.n for o in res.outputs] == [39, 6, 6]
    assert res.kind == "insar_unwrapped" and res.units == "rad"
    assert 80 < res.pixel_spacing_m < 90
    raws = [tifffile.imread(p) for p in files]
    tiles_of = {}
    for raw in raws:
        for y in (0, 16, 32):
            t = raw[y : y + 32, :32].astype(np.float32)
            tiles_of[np.where(t == 0, np.nan, t).tobytes()] = (t == 0).mean()
    n_seen = 0
    for o in res.outputs:
        with DatasetFile(o.path) as ds:
            assert ds.info.pixel_spacing_m == pytest.approx(res.pixel_spacing_m)
            for img in ds.images():
                # each tile is a source tile, pixel for pixel; NaN exactly where the file had 0
                assert np.isnan(img).mean() == tiles_of[img.tobytes()]
                n_seen += 1
    assert n_seen == 51


@needs_realdata
def test_real_interferograms_whole_scenes_nan_fraction(tmp_path):
    res = prepare(REALDATA, tmp_path / "w.h5", nodata=0)
    raws = np.stack([tifffile.imread(p) for p in sorted(REALDATA.glob("geo_*_unw.tif"))])
    with DatasetFile(res.outputs[0].path) as ds:
        imgs = ds.images()[:, 0]
    assert imgs.shape == (17, 72, 47)
    assert np.isnan(imgs).mean() == pytest.approx((raws == 0).mean())
    np.testing.assert_array_equal(np.nan_to_num(imgs), raws)


def test_single_scene_is_split_by_tile(tmp_path):
    scene = np.arange(40 * 40, dtype=np.float32).reshape(40, 40)
    np.save(tmp_path / "scene.npy", scene)
    res = prepare(tmp_path / "scene.npy", tmp_path / "s.h5", tile=8, split=(0.6, 0.2, 0.2))
    assert [o.n for o in res.outputs] == [15, 5, 5]
    corners = []
    for o in res.outputs:
        with DatasetFile(o.path) as ds:
            corners += ds.images()[:, 0, 0, 0].tolist()
    assert sorted(corners) == sorted(scene[::8, ::8].ravel().tolist())


def test_tengeop_db_resize_labels(tmp_path):
    root = tmp_path / "GeoTIFF"
    for k, cls in enumerate(("F", "G", "O")):
        (root / cls).mkdir(parents=True)
        for j, shape in enumerate(((20, 18), (22, 20))):  # vignettes differ in size
            tifffile.imwrite(root / cls / f"{cls}{j}.tiff", np.full(shape, 10.0**k, np.float32))
    res = prepare(root, tmp_path / "sar.h5", resize=8, db=True)
    assert (res.kind, res.units, res.format) == ("sar_backscatter", "dB", "tengeop")
    with DatasetFile(res.outputs[0].path) as ds:
        assert ds.info.class_names == ["F", "G", "O"] and ds.info.shape == (1, 8, 8)
        # class k holds sigma0 = 10^k, i.e. 10 k dB after conversion and resizing
        np.testing.assert_allclose(ds.images()[:, 0, 4, 4], 10.0 * ds.labels(), atol=1e-4)
        assert "oceanic front" in ds.attrs()["class_descriptions"]


def test_pixel_spacing_follows_resize(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i in range(2):
        tifffile.imwrite(
            folder / f"s{i}.tif",
            np.ones((16, 16), np.float32),
            extratags=[(33550, "d", 3, (10.0, 10.0, 0.0), True)],
        )
    res = prepare(folder, tmp_path / "a.h5", tile=8, resize=4)
    assert res.pixel_spacing_m == pytest.approx(20.0)  # 8 source pixels of 10 m -> 4 pixels
    with DatasetFile(tmp_path / "a.h5") as ds:
        assert ds.info.pixel_spacing_m == pytest.approx(20.0) and len(ds) == 8
    assert prepare(folder, tmp_path / "b.h5").pixel_spacing_m == pytest.approx(10.0)


def test_complex_data_to_intensity_amplitude_db_phase(tmp_path):
    """A complex stack (complex dtype) and the same data as real/imaginary channels-last pairs
    give |z|^2, |z|, 10 log10 |z|^2 and arg z, with the units each implies; complex data
    without --complex are refused with one line."""
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(2, 8, 8)) + 1j * rng.normal(size=(2, 8, 8))).astype(np.complex64)
    np.save(tmp_path / "c.npy", z)
    np.save(tmp_path / "iq.npy", np.stack([z.real, z.imag], axis=-1).astype(np.float32))
    want = {
        "intensity": (np.abs(z) ** 2, "linear"),
        "amplitude": (np.abs(z), "linear"),
        "db": (10 * np.log10(np.abs(z) ** 2), "dB"),
        "phase": (np.angle(z), "rad"),
    }
    for mode, (values, units) in want.items():
        res = prepare(tmp_path / "c.npy", tmp_path / f"{mode}.h5", complex_mode=mode)
        assert res.units == units and res.shape == (1, 8, 8)
        with DatasetFile(tmp_path / f"{mode}.h5") as ds:
            np.testing.assert_allclose(ds.images()[:, 0], values, rtol=1e-5, atol=1e-5)
    pairs = prepare(tmp_path / "iq.npy", tmp_path / "iq_amp.h5", complex_mode="amplitude")
    assert pairs.n_written == 2 and pairs.shape == (1, 8, 8)
    with DatasetFile(tmp_path / "iq_amp.h5") as ds:
        np.testing.assert_allclose(ds.images()[:, 0], np.abs(z), rtol=1e-5)
    with pytest.raises(DataError, match=r"c.npy\[0\]: complex values; give --complex") as err:
        prepare(tmp_path / "c.npy", tmp_path / "refused.h5")
    assert "\n" not in str(err.value) and not list(tmp_path.glob("refused*"))
    np.save(tmp_path / "three.npy", np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(DataError, match="3 real channel"):
        prepare(tmp_path / "three.npy", tmp_path / "t.h5", complex_mode="phase")
    with pytest.raises(ConfigError, match="use --complex db"):
        prepare(tmp_path / "c.npy", tmp_path / "t.h5", complex_mode="intensity", db=True)


def test_crop_or_pad_mixed_sizes_and_channel_mismatch(tmp_path):
    """--crop centre-crops larger images and pads smaller ones with no data (pixels never
    resampled); samples of other channel counts are refused as such, not as a size."""
    from radardiff.data.prepare import crop_or_pad

    img = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    np.testing.assert_array_equal(crop_or_pad(img, (3, 2)), img[:, 1:4, 2:4])
    padded = crop_or_pad(img, (7, 6))
    assert np.isnan(padded[:, 0]).all() and np.isnan(padded[:, 6]).all()
    np.testing.assert_array_equal(padded[:, 1:6], img)
    folder = tmp_path / "chips"
    folder.mkdir()
    for i, (h, w) in enumerate([(10, 12), (8, 8), (12, 9)]):
        tifffile.imwrite(folder / f"ship_{i}.tif", np.full((h, w), float(i + 1), np.float32))
    with pytest.raises(DataError, match=r"size \(8, 8\) differs.*--resize, --crop or --tile"):
        prepare(folder, tmp_path / "no.h5")
    res = prepare(folder, tmp_path / "c.h5", crop=8, max_nan_fraction=0.5)
    assert res.n_written == 3 and res.shape == (1, 8, 8)
    with DatasetFile(tmp_path / "c.h5") as ds:
        assert np.nanmax(ds.images(), axis=(1, 2, 3)).tolist() == [1.0, 2.0, 3.0]
    two = tmp_path / "two"
    two.mkdir()
    np.save(two / "a.npy", np.zeros((1, 8, 8), np.float32))
    tifffile.imwrite(two / "a.tif", np.zeros((8, 8), np.float32))
    tifffile.imwrite(two / "b.tif", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"2 channel\(s\), but .*a.tif has 1"):
        prepare(two, tmp_path / "t.h5", format="geotiff")
    with pytest.raises(ConfigError, match="--crop and --resize"):
        prepare(folder, tmp_path / "x.h5", crop=8, resize=8)
