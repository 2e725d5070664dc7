"""Writers of generated samples: dataset file (HDF5), reference-layout NPZ, PNG grid, GeoTIFF."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from radardiff import _stop
from radardiff._files import hold_output, replace_dir, temp_file_for
from radardiff.data.dataset_file import write_dataset
from radardiff.errors import ConfigError

FORMATS = ("h5", "npz", "png", "tif")


def output_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
        return fmt
    ext = path.suffix.lower().lstrip(".")
    aliases = {"hdf5": "h5", "tiff": "tif"}
    ext = aliases.get(ext, ext)
    if ext not in FORMATS:
        raise ConfigError(
            f"{path}: unknown output extension; use .h5, .npz, .png or .tif (a folder)"
        )
    return ext


def write_samples(run, opts, arrays: dict[str, np.ndarray], out: Path, signature: str = "") -> Path:
    """Write samples in the format of ``out``'s extension (dataset file, NPZ, PNG grid, GeoTIFFs);
    ``signature`` is the request's (:func:`radardiff.sample.generate.request_signature`)."""
    info = run.data_info
    fmt = output_format(out)
    images = arrays["images"]
    labels = arrays.get("labels")
    extras = {"seeds": arrays["seeds"], "norm_stats": arrays["stats"]}
    attrs = {
        "sampler": opts.sampler,
        "steps": opts.steps,
        "seed": opts.seed,
        "guidance": opts.guidance,
        "checkpoint": str(run.checkpoint),
        "weights": f"{run.weights} {run.weights_id}",
        "request": signature,  # lets a cascade reuse a finished first stage
    }
    if opts.condition:
        attrs.update(condition=str(opts.condition), sr_noise=opts.sr_noise)
    if opts.amplitude is not None:
        attrs["amplitude"] = opts.amplitude
    maps = arrays.get("maps")
    if maps is not None:
        attrs["map_file"] = str(opts.maps)
    if fmt == "h5":
        return write_dataset(
            out,
            images,
            labels,
            kind=info["kind"],
            units=info["units"],
            class_names=info.get("class_names") if labels is not None else None,
            pixel_spacing_m=info.get("pixel_spacing_m"),
            source=f"radardiff sample {run.run.root}",
            extras=extras,
            attrs=attrs,
            maps=maps,
            map_channels=run.normalizer.maps.channels if maps is not None else (),
        )
    if fmt == "npz":
        return write_npz(out, images, labels, arrays["seeds"])
    if fmt == "png":
        return write_png_grid(out, images, centre=info["kind"] in REFERENCE_FREE_KINDS)
    return write_geotiffs(out, images, info.get("pixel_spacing_m"))


def write_npz(
    out: Path, images: np.ndarray, labels: np.ndarray | None, seeds: np.ndarray | None = None
) -> Path:
    """The reference code's layout: ``arr_0`` (N, H, W, C) float32, ``arr_1`` labels if any;
    the sample indices under the extra key ``seeds`` (readers of the reference layout ignore it)."""
    arr = np.transpose(images, (0, 2, 3, 1)).astype(np.float32)
    arrays = [arr] if labels is None else [arr, labels]
    extra = {} if seeds is None else {"seeds": np.asarray(seeds, np.int64)}
    # a file object: np.savez would append ".npz" to the name
    return _write_atomic(out, lambda fh: np.savez(fh, *arrays, **extra))


def _write_atomic(out: Path, write) -> Path:
    """``write(file object)`` into a temporary file of its own beside ``out`` (so that nothing
    else writes it), moved into place when whole; removed on any failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with hold_output(out):
        fd, tmp = temp_file_for(out)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            _stop.check()
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return out


# unwrapped phase has an arbitrary reference per image: a grid shows each image minus its mean
# (as the histogram metric does, radardiff.evaluate.metrics.CENTRED_KINDS)
REFERENCE_FREE_KINDS = ("insar_unwrapped", "insar_noise")


def grid_image(images: np.ndarray, ncols: int | None = None, centre: bool = False) -> np.ndarray:
    """First channel of each image (minus its mean with ``centre``), all scaled by the 2-98 %
    percentiles of the whole set, tiled."""
    x = images[:, 0].astype(np.float64)
    if centre:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN images stay NaN
            x = x - np.nanmean(x, axis=(1, 2), keepdims=True)
    finite = x[np.isfinite(x)]
    lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    scaled = np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)
    scaled = np.where(np.isfinite(scaled), scaled, 0.0)
    n, h, w = scaled.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.ones((nrows * (h + 1) + 1, ncols * (w + 1) + 1))
    for k in range(n):
        r, c = divmod(k, ncols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = scaled[
            k
        ]
    return (grid * 255).round().astype(np.uint8)


def write_png_grid(out: Path, images: np.ndarray, centre: bool = False) -> Path:
    from PIL import Image

    grid = grid_image(images, centre=centre)
    return _write_atomic(out, lambda fh: Image.fromarray(grid).save(fh, "PNG"))


def write_geotiffs(out: Path, images: np.ndarray, pixel_spacing_m: float | None) -> Path:
    """One float32 GeoTIFF per sample in the folder ``out`` (named like ``OUT.tif/``), made
    whole in a temporary folder and moved into place (an existing folder is replaced)."""
    import tifffile

    folder = out.with_suffix("") if out.suffix else out
    extratags = []
    if pixel_spacing_m:
        # ModelPixelScaleTag: the pixel size, so GIS tools show the right scale
        extratags.append((33550, "d", 3, (pixel_spacing_m, pixel_spacing_m, 0.0), False))

    def write(tmp: Path) -> None:
        for k, img in enumerate(images):
            _stop.check()
            tifffile.imwrite(
                tmp / f"sample_{k:06d}.tif",
                img.astype(np.float32),
                extratags=extratags,
                photometric="minisblack",
            )

    replace_dir(folder, write)
    return folder
