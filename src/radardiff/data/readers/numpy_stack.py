"""NumPy stacks: ``.npy`` (memory-mapped, never loaded whole) and ``.npz`` archives.

An array of shape ``(H, W)`` is one sample, ``(N, H, W)`` N one-channel samples, ``(N, C, H, W)``
N samples of C channels. Channels-last arrays are recognised by a last axis of at most 4 behind
larger ones: ``(H, W, C)`` is one sample of C channels (a complex image saved as real and imaginary
parts, ``(256, 256, 2)``, is not 256 samples of 256 x 2 pixels), ``(N, H, W, C)`` N samples. In an ``.npz`` the data key defaults to ``images``, ``data``, ``x`` or
the only array; the label key (``labels`` / ``y`` when present, or as given) holds one integer or
string label per sample. An ``.npz`` member is read whole when first used (zip members cannot be
memory-mapped): save large stacks as ``.npy``.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from radardiff.data.readers.base import MAX_LAST_CHANNELS, Reader, SourceInfo, as_float
from radardiff.data.readers.hdf5 import _label_text
from radardiff.errors import DataError

log = logging.getLogger(__name__)

NPZ_KEYS = ("images", "data", "x", "X")
NPZ_LABEL_KEYS = ("labels", "y", "Y")


class NumpyReader(Reader):
    def __init__(
        self,
        src: Path,
        key: str | None = None,
        label_key: str | None = None,
        nodata: float | None = None,
    ) -> None:
        super().__init__(src)
        self.nodata = nodata
        labels = None
        try:
            if src.suffix.lower() == ".npy":
                if label_key is not None:
                    raise DataError(
                        f"{src}: a .npy file holds no labels; use an .npz with a label array"
                    )
                self.key = None
                self.array = np.load(src, mmap_mode="r", allow_pickle=False)
            else:
                # np.load of an npz is lazy: each array is read on access
                npz = np.load(src, allow_pickle=False)
                names = list(npz.files)
                self.key = key or next((k for k in NPZ_KEYS if k in names), None)
                if self.key is None and len(names) == 1:
                    self.key = names[0]
                if self.key is None or self.key not in names:
                    what = f"no '{key}' key" if key else "cannot tell which array holds the images"
                    raise DataError(f"{src}: {what}; keys present: {', '.join(names) or 'none'}")
                self.array = npz[self.key]
                lk = label_key or next((k for k in NPZ_LABEL_KEYS if k in names), None)
                if label_key is not None and label_key not in names:
                    raise DataError(
                        f"{src}: no '{label_key}' key; keys present: {', '.join(names)}"
                    )
                if lk is not None:
                    labels = [_label_text(v) for v in np.atleast_1d(npz[lk])]
        except DataError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"{src}: not a readable NumPy file ({msg})") from None
        shape = self.array.shape
        if self.array.ndim not in (2, 3, 4):
            raise DataError(
                f"{src}: array of shape {shape} is not (H, W), (N, H, W) or (N, C, H, W)"
            )
        self.layout = _layout(shape)
        n = 1 if self.layout in ("HW", "HWC") else shape[0]
        if self.layout in ("HWC", "NHWC"):
            log.info("%s: array %s read as channels-last (%s)", src, shape, self.layout)
        if labels is not None and len(labels) != n:
            raise DataError(f"{src}: {len(labels)} labels for {n} images")
        self.items = list(range(n))
        self.labels = labels
        self.info = SourceInfo("numpy", "generic", "unknown")

    def name(self, i: int) -> str:
        return f"{self.src}[{i}]"

    def read(self, i: int) -> np.ndarray:
        single = self.layout in ("HW", "HWC")
        arr = np.asarray(self.array if single else self.array[i])
        if self.layout in ("HWC", "NHWC"):
            arr = np.moveaxis(arr, -1, 0)
        return as_float(arr[None] if arr.ndim == 2 else arr, self.name(i), self.nodata)


def _layout(shape: tuple[int, ...]) -> str:
    """``HW``, ``NHW``, ``NCHW``, or channels-last ``HWC`` / ``NHWC`` (a last axis of at most
    4 behind two larger ones: no image is 4 pixels wide)."""
    last_is_channels = shape[-1] <= MAX_LAST_CHANNELS < min(shape[-3:-1], default=0)
    if len(shape) == 3 and last_is_channels:
        return "HWC"
    if len(shape) == 4 and last_is_channels and shape[1] > MAX_LAST_CHANNELS:
        return "NHWC"
    return {2: "HW", 3: "NHW", 4: "NCHW"}[len(shape)]


def numpy_reader(
    src: Path, key: str | None = None, label_key: str | None = None, nodata: float | None = None
) -> NumpyReader:
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    return NumpyReader(src, key, label_key, nodata)
