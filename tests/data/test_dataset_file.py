"""The dataset file: round trips, lazy reads, atomic writes, bad files."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from radardiff.data.dataset_file import DatasetFile, DatasetWriter, write_dataset
from radardiff.errors import DataError


def test_round_trip_with_labels_extras_attrs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 2, 4, 5)).astype(np.float32)
    x[1, 0, 0, 0] = np.nan
    y = rng.integers(0, 3, 9)
    coh = rng.random((9, 4, 5)).astype(np.float32)
    p = write_dataset(
        tmp_path / "d.h5",
        x,
        y,
        kind="insar_wrapped",
        units="rad",
        class_names=["a", "b", "c"],
        pixel_spacing_m=30.0,
        source="test",
        extras={"coherence": coh},
        attrs={"meta": {"k": 1}},
    )
    with DatasetFile(p) as ds:
        info = ds.info
        assert (info.n, info.shape, info.kind, info.units) == (9, (2, 4, 5), "insar_wrapped", "rad")
        assert (
            info.class_names == ["a", "b", "c"] and info.has_labels and info.extras == ["coherence"]
        )
        assert info.pixel_spacing_m == 30.0 and info.source == "test"
        np.testing.assert_array_equal(ds.images(), x)
        np.testing.assert_array_equal(ds.labels(), y)
        np.testing.assert_array_equal(ds.extra("coherence", np.array([4, 2])), coh[[4, 2]])
        # unsorted, repeated indices come back in the order asked
        np.testing.assert_array_equal(ds.images(np.array([5, 1, 5, 0])), x[[5, 1, 5, 0]])
        assert ds.attrs()["meta"] == '{"k": 1}'
        blocks = list(ds.iter_blocks(4))
        assert [b[1].shape[0] for b in blocks] == [4, 4, 1]
        with pytest.raises(DataError, match="no 'unwrapped' dataset"):
            ds.extra("unwrapped")


def test_writer_is_atomic(tmp_path):
    p = tmp_path / "d.h5"
    write_dataset(p, np.zeros((2, 1, 3, 3)), kind="generic", units="")
    before = p.read_bytes()
    with pytest.raises(RuntimeError), DatasetWriter(p, (1, 3, 3), kind="generic", units="") as w:
        w.append(np.ones((4, 1, 3, 3)))
        raise RuntimeError("interrupted")
    assert p.read_bytes() == before  # the old file is untouched
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d.h5"]


def test_writer_checks_and_update_attrs(tmp_path):
    with pytest.raises(DataError, match="unknown kind"):
        DatasetWriter(tmp_path / "x.h5", (1, 2, 2), kind="optical", units="")
    w = DatasetWriter(tmp_path / "y.h5", (1, 2, 2), kind="generic", units="", attrs={"gone": 1})
    with pytest.raises(DataError, match="do not fit"):
        w.append(np.zeros((1, 1, 3, 3)))
    w.append(np.zeros((2, 1, 2, 2)))
    w.update_attrs({"pixel_spacing_m": 5.0}, remove=("gone",))
    w.close()
    with DatasetFile(tmp_path / "y.h5") as ds:
        assert ds.info.pixel_spacing_m == 5.0 and "gone" not in ds.attrs() and len(ds) == 2


def test_bad_files(tmp_path):
    with h5py.File(tmp_path / "noimg.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(DataError, match=r"noimg\.h5: no 'images' dataset; keys present: x"):
        DatasetFile(tmp_path / "noimg.h5")
    with pytest.raises(DataError, match="not found"):
        DatasetFile(tmp_path / "missing.h5")


def test_pickles_without_handle(tmp_path):
    p = write_dataset(tmp_path / "d.h5", np.ones((3, 1, 2, 2)), kind="generic", units="")
    ds = DatasetFile(p)
    ds.images(slice(0, 1))  # opens the handle
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.images(), np.ones((3, 1, 2, 2)))
    ds.close()
    clone.close()


def test_unwritable_target_is_a_data_error(tmp_path):
    (tmp_path / "f").write_text("a file, not a folder")
    with pytest.raises(DataError, match=r"f/x\.h5: cannot write the dataset file"):
        write_dataset(tmp_path / "f" / "x.h5", np.zeros((1, 1, 2, 2)), kind="generic", units="")


def test_a_file_that_declares_more_than_it_stores_is_refused_at_once(tmp_path):
    """6 KB declaring 1e9 images: refused when opened, before any read or allocation."""
    import h5py

    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", shape=(10**9, 1, 32, 32), dtype="f4", chunks=(1, 1, 32, 32))
    assert path.stat().st_size < 20_000
    with pytest.raises(DataError, match=r"declares 1000000000 images .* only 0 of its"):
        _ = DatasetFile(path).info
    flat = tmp_path / "flat.h5"
    with h5py.File(flat, "w") as h5:
        h5.create_dataset("images", shape=(10**5, 1, 32, 32), dtype="f4")  # never written
    with pytest.raises(DataError, match=r"declares 100000 images .* but stores 0 bytes"):
        _ = DatasetFile(flat).info


def test_dataset_files_must_be_named_as_hdf5(tmp_path):
    from radardiff.data.synth import synthesize

    with pytest.raises(DataError, match=r"o.png: a dataset file is HDF5 and must end in .h5"):
        write_dataset(tmp_path / "o.png", np.zeros((1, 1, 8, 8)), kind="generic", units="")
    with pytest.raises(DataError, match=r"s.tif: a dataset file is HDF5"):
        synthesize("insar_noise", 2, 8, tmp_path / "s.tif")
    assert not list(tmp_path.iterdir())


def test_zero_size_is_refused_not_the_default(tmp_path):
    from radardiff.data.synth import synthesize

    with pytest.raises(DataError, match="--size must be at least 8, got 0"):
        synthesize("insar_noise", 2, 0, tmp_path / "z.h5")


def test_unfinished_file_of_an_interrupted_write_is_removed_with_a_notice(tmp_path, caplog):
    stale = tmp_path / ".d.h5.partial"
    stale.write_bytes(b"half")
    with caplog.at_level("WARNING"):
        write_dataset(tmp_path / "d.h5", np.zeros((2, 1, 4, 4)), kind="generic", units="")
    assert not stale.exists() and "interrupted write" in caplog.text
