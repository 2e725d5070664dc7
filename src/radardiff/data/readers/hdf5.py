"""HDF5 files (one file, or a folder of ``.h5`` / ``.hdf5`` files) with a data key.

The reference code's layout is a folder of HDF5 files, each holding one 2-D image under a key
such as ``unwrap`` (unwrapped phase), ``wrap`` (wrapped phase) or ``real_data``. A dataset of
shape ``(H, W)`` is one sample, ``(N, H, W)`` is N one-channel samples and ``(N, C, H, W)`` is N
samples of C channels. Without a key the first of :data:`KNOWN_KEYS` present is used, or the only
dataset of the file. An optional label key names a dataset (or an attribute) holding either one
label for the file or one per sample, as integers or strings.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from radardiff.data.readers.base import HDF5_EXTS, Reader, SourceInfo, as_float, list_files
from radardiff.errors import DataError

KNOWN_KEYS = ("unwrap", "real_data", "wrap", "images", "data")
_KIND_OF_KEY = {"unwrap": ("insar_unwrapped", "rad"), "wrap": ("insar_wrapped", "rad")}


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as err:
        msg = str(err).splitlines()[0] if str(err) else "unreadable"
        raise DataError(f"{path}: not a readable HDF5 file ({msg})") from None


def dataset_names(h5: h5py.File) -> list[str]:
    names: list[str] = []
    h5.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _missing(path: Path, key: str, h5: h5py.File) -> DataError:
    present = dataset_names(h5)
    shown = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "")
    return DataError(f"{path}: no '{key}' key; keys present: {shown or 'none'}")


class Hdf5Reader(Reader):
    """Items are ``(file, index)`` pairs; ``index`` is None for a file holding one 2-D image."""

    def __init__(
        self,
        src: Path,
        files: list[Path],
        key: str | None = None,
        label_key: str | None = None,
        nodata: float | None = None,
    ) -> None:
        super().__init__(src)
        self.files = files
        self.nodata = nodata
        self._h5: h5py.File | None = None
        self._h5_path: Path | None = None
        with _open(files[0]) as h5:
            self.key = key or self._guess_key(files[0], h5)
            self.info = self._source_info(h5)
        labels: list[str] = []
        for path in files:
            with _open(path) as h5:
                if self.key not in h5 or not isinstance(h5[self.key], h5py.Dataset):
                    raise _missing(path, self.key, h5)
                dset = h5[self.key]
                n = self._count(path, dset.shape)
                self.items.extend((path, None if dset.ndim == 2 else j) for j in range(n))
                if label_key is not None:
                    labels.extend(self._labels(path, h5, dset, label_key, n))
        self.labels = labels if label_key is not None else None

    @staticmethod
    def _guess_key(path: Path, h5: h5py.File) -> str:
        for k in KNOWN_KEYS:
            if k in h5 and isinstance(h5[k], h5py.Dataset):
                return k
        names = dataset_names(h5)
        if len(names) == 1:
            return names[0]
        raise DataError(
            f"{path}: cannot tell which dataset holds the images; pass --key, one of: "
            f"{', '.join(names[:20]) or 'none'}"
        )

    def _source_info(self, h5: h5py.File) -> SourceInfo:
        kind, units = _KIND_OF_KEY.get(self.key.split("/")[-1], ("generic", "unknown"))
        attrs = {**dict(h5.attrs), **dict(h5[self.key].attrs)} if self.key in h5 else {}
        units = str(attrs.get("units", units))
        kind = str(attrs.get("kind", kind))
        spacing = attrs.get("pixel_spacing_m")
        return SourceInfo("hdf5", kind, units, float(spacing) if spacing is not None else None)

    @staticmethod
    def _count(path: Path, shape: tuple[int, ...]) -> int:
        if len(shape) == 2:
            return 1
        if len(shape) in (3, 4):
            return shape[0]
        raise DataError(
            f"{path}: dataset of shape {shape} is not (H, W), (N, H, W) or (N, C, H, W)"
        )

    @staticmethod
    def _labels(path: Path, h5: h5py.File, dset: h5py.Dataset, label_key: str, n: int) -> list[str]:
        if label_key in h5:
            value = h5[label_key][()]
        elif label_key in dset.attrs:
            value = dset.attrs[label_key]
        elif label_key in h5.attrs:
            value = h5.attrs[label_key]
        else:
            raise _missing(path, label_key, h5)
        arr = np.atleast_1d(np.asarray(value))
        if arr.size == 1:
            arr = np.repeat(arr, n)
        if arr.shape != (n,):
            raise DataError(
                f"{path}: label '{label_key}' has shape {arr.shape}, expected ({n},) or one value"
            )
        return [_label_text(v) for v in arr]

    def name(self, i: int) -> str:
        path, j = self.items[i]
        return f"{path}:{self.key}" + (f"[{j}]" if j is not None else "")

    def read(self, i: int) -> np.ndarray:
        path, j = self.items[i]
        if self._h5_path != path:
            self.close()
            self._h5, self._h5_path = _open(path), path
        try:
            arr = self._h5[self.key][()] if j is None else self._h5[self.key][j]
        except (OSError, ValueError, KeyError) as err:
            msg = str(err).splitlines()[0] if str(err) else "unreadable"
            raise DataError(f"{self.name(i)}: cannot read the data ({msg})") from None
        arr = np.asarray(arr)
        if np.iscomplexobj(arr):
            raise DataError(
                f"{self.name(i)}: complex data; store phase or amplitude as real values"
            )
        return as_float(arr[None] if arr.ndim == 2 else arr, self.name(i), self.nodata)

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5, self._h5_path = None, None


def _label_text(v) -> str:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v)


def hdf5_reader(
    src: Path, key: str | None = None, label_key: str | None = None, nodata: float | None = None
) -> Hdf5Reader:
    if src.is_dir():
        files = list_files(src, HDF5_EXTS)
        if not files:
            raise DataError(f"{src}: no HDF5 files ({', '.join(HDF5_EXTS)}) found")
    elif src.is_file():
        files = [src]
    else:
        raise DataError(f"{src}: no such file or folder")
    return Hdf5Reader(src, files, key, label_key, nodata)
