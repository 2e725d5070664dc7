"""Output formats: reference-layout NPZ, PNG grid, one GeoTIFF per sample, all equal to the
dataset file's samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radardiff.data.dataset_file import DatasetFile
from radardiff.errors import ConfigError
from radardiff.sample import SampleOptions, generate, grid_image, load_run, output_format

OPTS = SampleOptions(n=5, sampler="dpmsolver++", steps=3, batch_size=5)


@pytest.fixture(scope="module")
def reference(trained_run, tmp_path_factory):
    run = load_run(trained_run)
    path = generate(run, OPTS, tmp_path_factory.mktemp("ref") / "ref.h5").path
    with DatasetFile(path) as f:
        return run, f.images()


def test_npz_reference_layout(reference, tmp_path):
    run, images = reference
    out = generate(run, OPTS, tmp_path / "s.npz").path
    with np.load(out) as z:
        assert set(z.files) == {"arr_0", "seeds"}  # unconditional: no arr_1
        assert z["arr_0"].shape == (5, 16, 16, 1) and z["arr_0"].dtype == np.float32
        np.testing.assert_array_equal(z["arr_0"], np.transpose(images, (0, 2, 3, 1)))
        np.testing.assert_array_equal(z["seeds"], np.arange(5))
    assert not list(tmp_path.glob("*.tmp*"))


def test_png_grid(reference, tmp_path):
    from PIL import Image

    run, images = reference
    out = generate(run, OPTS, tmp_path / "g.png").path
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 17 + 1, 3 * 17 + 1) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid, grid_image(images, centre=True))  # insar_noise: centred


def test_grid_image_values():
    """Tiles in row-major order, 1-pixel white borders, 2-98 % percentile scaling."""
    imgs = np.stack([np.full((1, 2, 3), v, np.float32) for v in (0.0, 1.0, 2.0)])
    g = grid_image(imgs, ncols=2)
    assert g.shape == (2 * 3 + 1, 2 * 4 + 1)
    assert (g[0] == 255).all() and (g[:, 0] == 255).all()
    lo, hi = np.percentile([0.0] * 6 + [1.0] * 6 + [2.0] * 6, [2, 98])
    expect = [round(255 * np.clip((v - lo) / (hi - lo), 0, 1)) for v in (0.0, 1.0, 2.0)]
    assert g[1, 1] == expect[0] and g[1, 5] == expect[1] and g[4, 1] == expect[2]
    assert (g[4:6, 5:8] == 255).all()  # the empty fourth tile stays white


def test_one_geotiff_per_sample(reference, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    run, images = reference
    folder = generate(run, OPTS, tmp_path / "tiles.tif").path
    files = sorted(Path(folder).glob("*.tif"))
    assert [f.name for f in files] == [f"sample_{k:06d}.tif" for k in range(5)]
    for k, f in enumerate(files):
        with tifffile.TiffFile(f) as tif:
            arr = tif.asarray()
            scale = tif.pages[0].tags["ModelPixelScaleTag"].value
        np.testing.assert_array_equal(np.squeeze(arr), images[k, 0])
        assert scale[:2] == (100.0, 100.0)  # the dataset's pixel spacing


def test_unknown_output_format():
    with pytest.raises(ConfigError, match=r"x\.jpg: unknown output extension"):
        output_format(Path("x.jpg"))
    assert output_format(Path("a.hdf5")) == "h5" and output_format(Path("a.tiff")) == "tif"


def test_grid_centres_images_of_arbitrary_reference():
    """Unwrapped phase: each tile minus its mean, so offsets between tiles do not hide them."""
    from radardiff.sample.writers import grid_image

    rng = np.random.default_rng(0)
    texture = rng.normal(size=(1, 1, 8, 8))
    images = np.concatenate([texture + 100.0, texture - 100.0])  # same texture, far apart
    plain, centred = grid_image(images), grid_image(images, centre=True)
    a, b = centred[1:9, 1:9], centred[1:9, 10:18]
    np.testing.assert_array_equal(a, b)  # centred: the same tile twice
    assert a.std() > 40  # and its texture spans the grey levels
    assert plain[1:9, 1:9].std() < 2 and plain[1:9, 10:18].std() < 2  # plain: two flat tiles
