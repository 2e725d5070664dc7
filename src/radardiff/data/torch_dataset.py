"""The torch Dataset over a dataset file: image, mask, label, per-sample statistics and the
encoded maps of a map-conditioned run."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from radardiff.data.dataset_file import DatasetFile
from radardiff.data.maps import select_channels
from radardiff.data.normalize import Normalizer, valid_sample_indices


class RadarDataset(Dataset):
    """Normalised samples of a dataset file, read lazily in batches.

    Only samples that hold data are served (all-NaN samples are skipped, see
    :meth:`Normalizer.fit`). ``__getitems__`` reads a whole batch with one sorted HDF5 read; an
    item ``(i, code)`` is sample ``i`` mirrored by :func:`mirror` ``code``.
    """

    def __init__(
        self, data: DatasetFile, normalizer: Normalizer, indices: np.ndarray | None = None
    ):
        self.data = data
        self.normalizer = normalizer
        self.indices = (
            valid_sample_indices(data, to_db=normalizer.to_db)
            if indices is None
            else np.asarray(indices, np.int64)
        )
        enc = normalizer.maps
        self._map_index = (
            None if enc is None else select_channels(data.info.maps, enc.channels, str(data.path))
        )

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitems__(self, items: list) -> dict[str, torch.Tensor]:
        pairs = np.asarray([(i, 0) if np.ndim(i) == 0 else tuple(i) for i in items], np.int64)
        idx = self.indices[pairs[:, 0]]
        batch = self.normalizer.transform(self.data.images(idx))
        labels = self.data.labels(idx)
        images, mask = batch.images, batch.mask
        maps = None
        if self._map_index is not None:
            maps = self.normalizer.maps.encode(self.data.maps(idx)[:, self._map_index])
        if pairs[:, 1].any():
            images = np.stack([mirror(a, c) for a, c in zip(images, pairs[:, 1], strict=True)])
            mask = np.stack([mirror(a, c) for a, c in zip(mask, pairs[:, 1], strict=True)])
            if maps is not None:  # the map turns with its image
                maps = np.stack([mirror(a, c) for a, c in zip(maps, pairs[:, 1], strict=True)])
        out = {
            "image": torch.from_numpy(images),
            "mask": torch.from_numpy(mask),
            "label": torch.from_numpy(labels if labels is not None else np.full(idx.size, -1)),
            "stats": torch.from_numpy(batch.stats.astype(np.float32)),
            "index": torch.from_numpy(idx),
        }
        if maps is not None:
            out["maps"] = torch.from_numpy(maps)
        return out

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([item]).items()}


AUGMENT_CODES = {"none": 1, "flips": 4, "dihedral": 8}


def mirror(a: np.ndarray, code: int) -> np.ndarray:
    """(C, H, W) mirrored: bit 0 of ``code`` flips left-right, bit 1 up-down, bit 2 swaps the
    axes (codes 0-3: the flips; 0-7: the eight symmetries of the square)."""
    if code & 4:
        a = a.swapaxes(-1, -2)
    if code & 1:
        a = a[..., ::-1]
    if code & 2:
        a = a[..., ::-1, :]
    return np.ascontiguousarray(a)


def identity_collate(batch):
    """``__getitems__`` already returns a collated batch."""
    return batch


class StepBatchSampler(Sampler[list[int]]):
    """Batches of a seeded shuffle, addressed by global step, so a resumed run sees the same data.

    The stream is the concatenation of permutations of ``range(n)``, permutation ``e`` drawn from
    ``seed`` and ``e``. Process ``rank`` of ``world`` takes every ``world``-th batch. With
    ``augment`` (``flips`` or ``dihedral``) each item is ``(i, code)``, the :func:`mirror` code
    drawn with the permutation, so a resumed run mirrors the same images the same way.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
        steps: int | None = None,
        augment: str = "none",
    ):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.rank, self.world, self.steps = start_step, rank, world, steps
        self.codes = AUGMENT_CODES[augment]

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def batch_for(self, step: int) -> list:
        global_batch = step * self.world + self.rank
        start = global_batch * self.batch_size
        out: list = []
        while len(out) < self.batch_size:
            epoch, offset = divmod(start + len(out), self.n)
            take = slice(offset, offset + self.batch_size - len(out))
            perm = self._perm(epoch)[take].tolist()
            if self.codes > 1:
                codes = np.random.default_rng([self.seed, epoch, 1]).integers(
                    self.codes, size=self.n
                )
                perm = list(zip(perm, codes[take].tolist(), strict=True))
            out.extend(perm)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while self.steps is None or step < self.steps:
            yield self.batch_for(step)
            step += 1

    def __len__(self) -> int:
        return (self.steps or 0) - self.start_step
