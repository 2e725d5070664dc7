r"""Feature extractors for FID, KID and precision/recall on radar data.

Two extractors map images (N, C, H, W) in physical units to features (N, D):

:class:`RadarFeatureExtractor`
    A small CNN that radardiff trains itself on the user's training file
    (:func:`train_extractor`, ``radardiff features train``). With labels it is a classifier
    (cross-entropy on augmented views); without labels it is a **SimCLR** encoder (Chen et al. 2020, "A simple
    framework for contrastive learning of visual representations"): two augmented views of each
    image are pulled together and pushed away from the other images of the batch with the
    NT-Xent loss

    .. math:: \ell_{i} = -\log \frac{\exp(\operatorname{sim}(z_i, z_{j(i)}) / \tau)}
              {\sum_{k \ne i} \exp(\operatorname{sim}(z_i, z_k) / \tau)},

    ``sim`` the cosine similarity of the projection-head outputs ``z`` and ``j(i)`` the other view
    of image ``i``. Contrastive rather than a denoising autoencoder because FID-type metrics need
    features that *discriminate between images* (what makes a scene different from another)
    while being invariant to nuisances; an autoencoder spends its capacity reproducing pixel
    detail and its bottleneck is not trained to separate images.

    The augmentations are radar-safe: flips and 90-degree rotations (InSAR noise and deformation
    have no preferred orientation on the grid), random crops **without rescaling** (rescaling
    would teach the encoder to ignore the correlation length, the first thing a semivariogram
    checks), and small additive Gaussian noise (0.05 in normalised units). No intensity or colour
    jitter: amplitudes are physical. Features are the global average of the last convolutional
    block (translation invariant, any image size), D = ``widths[-1]`` (64 by default).

    Inputs are normalised as the training normaliser does
    (:class:`radardiff.data.normalize.Normalizer` fitted on the extractor's training file and
    stored with it; per-sample min-max to [-1, 1] by default, NaN pixels filled with 0). Per-sample
    normalisation removes each image's offset and scale, so these features compare *shapes* of
    the fields; amplitudes are compared by the radar statistics of :mod:`radardiff.evaluate`.

    Training: AdamW with a one-cycle learning rate, full batches of 128, 6 epochs over at most
    2048 images by default (about a minute on 2 CPU cores for 32 x 32 images); every random draw
    (weights, subset, order, augmentations) comes from the seed.

    Saved in a folder: ``model.safetensors`` (weights) and ``extractor.json`` (format
    ``radardiff.extractor/1``: architecture, the data it fits, the normaliser, training summary).

:class:`InceptionExtractor`
    InceptionV3 pool features (D = 2048) from a **local** torchvision-format weights file (for
    example ``inception_v3_google-0cc3c7bd.pth`` or a fine-tuned copy; ``fc.*`` and ``AuxLogits.*``
    keys are ignored). Nothing is downloaded. Needs torchvision, an optional dependency.
    Images are min-max scaled per sample and channel to [0, 1], single channels repeated to
    three, resized bilinearly to 299 x 299 and standardised with the ImageNet mean and standard
    deviation; the network is built with ``transform_input=True``, as torchvision builds it for
    its pretrained weights, so the convolutions see the [-1, 1] inputs the Google weights were
    trained on. Features are the output of the network's average pool (before dropout and ``fc``).

:func:`load_extractor` picks one from a path (a folder: radardiff; a file: Inception).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radardiff import _stop
from radardiff._files import holding, replace_dir
from radardiff.data import DatasetFile
from radardiff.data.normalize import Normalizer
from radardiff.errors import DataError, RadarDiffError

log = logging.getLogger(__name__)

FORMAT = "radardiff.extractor/1"
CONFIG_NAME = "extractor.json"
WEIGHTS_NAME = "model.safetensors"
_NOISE_STD = 0.05  # additive-noise augmentation, normalised units
_CROP_FRACTION = 0.75  # side of the random crops relative to the image side


class FeatureExtractor(Protocol):
    """What :func:`radardiff.evaluate.evaluate_files` needs from an extractor."""

    name: str

    def check_fits(self, info: Any) -> None: ...

    def features(self, images: np.ndarray) -> np.ndarray: ...


# ---- network ------------------------------------------------------------------------------------


def _groups(width: int) -> int:
    return math.gcd(width, 8)


class RadarEncoder(nn.Module):
    """One block (3x3 conv, GroupNorm, SiLU) per width, stride 2 from the second on, then a
    3x3 conv at the last width and a global average pool. ``forward`` returns the (B, widths[-1]) features."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers += [
                nn.Conv2d(c, w, 3, stride=1 if i == 0 else 2, padding=1),
                nn.GroupNorm(_groups(w), w),
                nn.SiLU(),
            ]
            c = w
        layers += [nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(_groups(c), c), nn.SiLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


class _Trainable(nn.Module):
    """Encoder plus the head used only in training (classifier or SimCLR projection)."""

    def __init__(self, cfg: ExtractorConfig) -> None:
        super().__init__()
        d = cfg.widths[-1]
        self.encoder = RadarEncoder(cfg.in_channels, cfg.widths)
        if cfg.mode == "classifier":
            self.head = nn.Linear(d, cfg.num_classes)
        else:
            self.head = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, cfg.projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


# ---- configuration and persistence --------------------------------------------------------------


@dataclass(frozen=True)
class ExtractorConfig:
    """Architecture, the data the extractor fits, and how it was trained."""

    mode: str  # "classifier" or "simclr"
    data_channels: int  # channels of the dataset file
    in_channels: int  # channels the network sees (wrapped phase: cos, sin)
    height: int
    width: int
    kind: str
    units: str
    widths: tuple[int, ...] = (16, 32, 64)
    num_classes: int = 0
    class_names: list[str] | None = None
    projection_dim: int = 32
    temperature: float = 0.2
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    n_train: int = 0
    source: str = ""

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]


@dataclass
class ExtractorTrainResult:
    """Where the extractor was written and how its training went (loss per epoch)."""

    path: Path
    mode: str
    epochs: int
    n_train: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    train_accuracy: float | None = None  # classifier only, last epoch, augmented views


class RadarFeatureExtractor:
    """A trained :class:`RadarEncoder` with its normaliser; see the module docstring."""

    def __init__(
        self, cfg: ExtractorConfig, normalizer: Normalizer, encoder: RadarEncoder, path: Path
    ) -> None:
        self.cfg, self.normalizer, self.encoder, self.path = cfg, normalizer, encoder.eval(), path
        self.name = f"radardiff-{cfg.mode}"

    @classmethod
    def load(cls, path: str | os.PathLike) -> RadarFeatureExtractor:
        """Read a folder written by :func:`train_extractor`; a broken folder is a DataError."""
        path = Path(path)
        cfg_path, w_path = path / CONFIG_NAME, path / WEIGHTS_NAME
        if not cfg_path.is_file() or not w_path.is_file():
            raise DataError(
                f"{path}: not a radardiff feature extractor (needs {CONFIG_NAME} and "
                f"{WEIGHTS_NAME}; make one with 'radardiff features train')"
            )
        try:
            d = json.loads(cfg_path.read_text(encoding="utf-8"))
            if d.get("format") != FORMAT:
                raise ValueError(f"format {d.get('format')!r} is not {FORMAT}")
            c = dict(d["config"])
            c["widths"] = tuple(c["widths"])
            cfg = ExtractorConfig(**c)
            norm = Normalizer.from_dict(d["normalizer"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{cfg_path}: not a valid extractor config ({err})") from None
        from safetensors.torch import load_file

        encoder = RadarEncoder(cfg.in_channels, cfg.widths)
        try:
            encoder.load_state_dict(load_file(w_path))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(
                f"{w_path}: weights do not fit the extractor config ({first})"
            ) from None
        return cls(cfg, norm, encoder, path)

    def check_fits(self, info: Any) -> None:
        """Refuse a dataset (a :class:`DatasetInfo`) whose channels, size or kind differ."""
        c = self.cfg
        where = f"{info.path}: does not fit the feature extractor {self.path}"
        if info.channels != c.data_channels:
            raise DataError(f"{where} ({info.channels} channel(s), it expects {c.data_channels})")
        if (info.height, info.width) != (c.height, c.width):
            raise DataError(
                f"{where} ({info.height}x{info.width} images, it expects {c.height}x{c.width})"
            )
        if info.kind != c.kind:
            raise DataError(f"{where} (kind '{info.kind}', it was trained on '{c.kind}')")

    @torch.no_grad()
    def features(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Features (N, D) float64 of images (N, C, H, W) in physical units (NaN = no data)."""
        images = np.asarray(images)
        c = self.cfg
        if images.ndim != 4 or images.shape[1:] != (c.data_channels, c.height, c.width):
            raise DataError(
                f"feature extractor {self.path}: expected images (N, {c.data_channels}, "
                f"{c.height}, {c.width}), got {images.shape}"
            )
        out = []
        for s in range(0, images.shape[0], batch_size):
            x = torch.from_numpy(self.normalizer.transform(images[s : s + batch_size]).images)
            out.append(self.encoder(x).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, c.feature_dim))


def _save(path: Path, cfg: ExtractorConfig, norm: Normalizer, model: _Trainable, extra: dict):
    """Write into a temporary sibling folder, then rename: a folder is complete or absent."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        state = {k: v.detach().contiguous() for k, v in model.encoder.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME))
        nd = norm.to_dict()
        # the training statistics are for drawing samples; transforming needs none of them
        nd["sample_stats"] = nd["sample_labels"] = None
        doc = {"format": FORMAT, "config": asdict(cfg), "normalizer": nd, "training": extra}
        (tmp / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    replace_dir(path, write)


# ---- training -----------------------------------------------------------------------------------


def augment(x: torch.Tensor, gen: torch.Generator, crop: int | None = None) -> torch.Tensor:
    """Radar-safe random view of a batch: flips, 90-degree rotations, a crop of side ``crop``
    (no rescaling) and additive Gaussian noise; every draw from ``gen``."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if h == w:
        k = torch.randint(0, 4, (b,), generator=gen)
        x = x.clone()
        for r in range(1, 4):
            sel = k == r
            if sel.any():
                x[sel] = torch.rot90(x[sel], r, dims=(2, 3))
    else:
        vflip = torch.rand(b, generator=gen) < 0.5
        x = torch.where(vflip[:, None, None, None], x.flip(-2), x)
    if crop is not None and crop < min(h, w):
        oy = torch.randint(0, h - crop + 1, (b,), generator=gen)
        ox = torch.randint(0, w - crop + 1, (b,), generator=gen)
        span = torch.arange(crop)
        rows = (oy[:, None] + span)[:, None, :, None]
        cols = (ox[:, None] + span)[:, None, None, :]
        x = x[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
              rows, cols]  # fmt: skip
    return x + _NOISE_STD * torch.randn(x.shape, generator=gen)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy over the 2B views (see module docstring)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def _load_training_data(
    ds: DatasetFile, norm: Normalizer, max_samples: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    idx = np.asarray(norm.valid_indices)
    if idx.size > max_samples:
        idx = np.sort(rng.choice(idx, max_samples, replace=False))
    x = norm.transform(ds.images(idx)).images
    labels = ds.labels(idx)
    return torch.from_numpy(x), None if labels is None else torch.from_numpy(labels).long()


def _mode_and_classes(ds: DatasetFile, mode: str) -> tuple[str, int]:
    """The training mode (``auto`` resolved) and the number of classes of the file's labels."""
    n_classes = 0
    if ds.info.has_labels:  # labels beyond the named classes still get an output
        n_classes = max(len(ds.info.class_names or []), int(ds.labels().max()) + 1)
    if mode == "auto":
        mode = "classifier" if n_classes >= 2 else "simclr"
    if mode == "classifier" and n_classes < 2:
        raise DataError(f"{ds.path}: a classifier extractor needs labels of at least 2 classes")
    return mode, n_classes


@holding("out_dir")
def train_extractor(
    data_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    epochs: int = 6,
    seed: int = 0,
    mode: str = "auto",
    normalization: str = "minmax_pm1",
    to_db: bool = False,
    widths: tuple[int, ...] = (16, 32, 64),
    batch_size: int = 128,
    lr: float = 2e-3,
    max_samples: int = 2048,
    on_progress: Callable[[int, int, dict], None] | None = None,
) -> ExtractorTrainResult:
    """Train a radar feature extractor on a dataset file and save it in ``out_dir``.

    Parameters
    ----------
    mode : ``"auto"`` (classifier when the file has labels and at least two classes, else
        SimCLR), ``"classifier"`` or ``"simclr"``.
    normalization, to_db : the :class:`Normalizer` fitted on ``data_file`` and stored.
    max_samples : at most this many training images (a seeded subset), held in memory.
    on_progress : called ``(epoch, epochs, {"loss": ...})`` after each epoch.

    Every random draw (initial weights, subset, shuffling, augmentations) derives from ``seed``.
    """
    if epochs < 1:
        raise RadarDiffError(f"--epochs must be at least 1, got {epochs}")
    if mode not in ("auto", "classifier", "simclr"):
        raise RadarDiffError(f"extractor mode must be auto, classifier or simclr, got '{mode}'")
    t0 = time.perf_counter()
    with DatasetFile(data_file) as ds:
        info = ds.info
        mode, n_classes = _mode_and_classes(ds, mode)
        norm = Normalizer.fit(ds, normalization, to_db)
        x, y = _load_training_data(ds, norm, max_samples, np.random.default_rng(seed))
    if x.shape[0] < 2:
        raise DataError(f"{info.path}: needs at least 2 images with data to train an extractor")
    cfg = ExtractorConfig(
        mode=mode, data_channels=info.channels, in_channels=norm.model_channels,
        height=info.height, width=info.width, kind=info.kind, units=info.units,
        widths=tuple(widths), num_classes=n_classes if mode == "classifier" else 0,
        class_names=info.class_names, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        n_train=int(x.shape[0]), source=str(info.path),
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the initial weights; the global generator is restored after
        model = _Trainable(cfg)
    losses, acc = _fit(model, cfg, x, y, torch.Generator().manual_seed(seed + 1), on_progress)
    extra = {"losses": losses, "train_accuracy": acc, "seconds": time.perf_counter() - t0}
    _save(Path(out_dir), cfg, norm, model, extra)
    return ExtractorTrainResult(
        path=Path(out_dir), mode=mode, epochs=epochs, n_train=cfg.n_train,
        seconds=time.perf_counter() - t0, losses=losses, train_accuracy=acc,
    )  # fmt: skip


def _fit(model, cfg, x, y, gen, on_progress) -> tuple[list[float], float | None]:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    n = x.shape[0]
    bs = min(cfg.batch_size, n)
    steps = cfg.epochs * max(1, n // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    crop = max(4, int(round(_CROP_FRACTION * min(cfg.height, cfg.width))))
    losses, acc = [], None
    model.train()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        total, count, correct = 0.0, 0, 0
        for s in range(0, n - bs + 1, bs):  # full batches: NT-Xent's negatives stay constant
            _stop.check()
            idx = perm[s : s + bs]
            xb = x[idx]
            if cfg.mode == "classifier":
                logits = model(augment(xb, gen, crop))
                loss = F.cross_entropy(logits, y[idx])
                correct += int((logits.argmax(1) == y[idx]).sum())
            else:
                loss = nt_xent(model(augment(xb, gen, crop)), model(augment(xb, gen, crop)),
                               cfg.temperature)  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + float(loss.detach()) * idx.numel(), count + idx.numel()
        losses.append(total / max(count, 1))
        if cfg.mode == "classifier":
            acc = correct / max(count, 1)
        if on_progress is not None:
            on_progress(epoch + 1, cfg.epochs, {"loss": losses[-1]})
    model.eval()
    return losses, acc


# ---- InceptionV3 from a local file --------------------------------------------------------------

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class InceptionExtractor:
    """InceptionV3 2048-d pool features from a local torchvision weights file (module docstring)."""

    name = "inception_v3"
    feature_dim = 2048

    def __init__(self, weights: str | os.PathLike, batch_size: int = 32) -> None:
        self.path = Path(weights)
        self.batch_size = batch_size
        if not self.path.is_file():
            raise DataError(f"{self.path}: InceptionV3 weights file not found")
        inception_v3 = _import_inception_v3(self.path)
        # transform_input=True: what torchvision sets for its pretrained InceptionV3 weights
        # (they expect inputs in [-1, 1]; the ImageNet-standardised input is mapped back inside)
        net = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
        state = _read_state_dict(self.path)
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches raise even with strict=False
            raise DataError(
                f"{self.path}: not torchvision InceptionV3 weights ({_first_problem(err)})"
            ) from None
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise DataError(
                f"{self.path}: not torchvision InceptionV3 weights ({len(missing)} missing, "
                f"{len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[0]})"
            )
        net.fc = nn.Identity()
        self.net = net.eval()

    def check_fits(self, info: Any) -> None:
        if info.channels not in (1, 3):
            raise DataError(
                f"{info.path}: InceptionV3 features need 1 or 3 channels, got {info.channels}"
            )

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        """Features (N, 2048) float64 of images (N, 1 or 3, H, W) in physical units (NaN = no data)."""
        images = np.asarray(images, dtype=np.float64)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise DataError(
                f"InceptionV3 features ({self.path}): expected images (N, 1 or 3, H, W), "
                f"got {images.shape}"
            )
        out = [np.zeros((0, self.feature_dim))]
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        for s in range(0, images.shape[0], self.batch_size):
            x = _unit_range(images[s : s + self.batch_size])
            x = torch.from_numpy(x).float()
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(self.net((x - mean) / std).double().numpy())
        return np.concatenate(out)


def _import_inception_v3(path: Path) -> Callable[..., nn.Module]:
    """torchvision's ``inception_v3`` builder; a RadarDiffError when torchvision is missing or
    does not import (a build for another torch, e.g. a CUDA wheel beside a CPU-only torch)."""
    try:
        from torchvision.models import inception_v3
    except ImportError:
        raise RadarDiffError(
            f"{path}: InceptionV3 features need torchvision, which is not installed "
            "(install the build that matches your torch, or train a radardiff extractor "
            "with 'radardiff features train')"
        ) from None
    except Exception as err:  # noqa: BLE001 - a broken torchvision raises RuntimeError and others
        raise RadarDiffError(
            f"{path}: InceptionV3 features need torchvision, which is installed but does not "
            f"import ({type(err).__name__}: {_first_problem(err)}; install the build that "
            "matches your torch, or train a radardiff extractor with 'radardiff features train')"
        ) from None
    return inception_v3


def _first_problem(err: BaseException) -> str:
    """The first informative line of an error message (load_state_dict: the first problem)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    rest = [ln for ln in lines if not ln.startswith("Error(s) in loading")]
    return (rest or lines or [type(err).__name__])[0]


def _unit_range(x: np.ndarray) -> np.ndarray:
    """Per-sample, per-channel min-max to [0, 1]; NaN -> 0; constant images -> 0.5."""
    flat = x.reshape(*x.shape[:2], -1)
    with np.errstate(all="ignore"):
        lo = np.nanmin(np.where(np.isfinite(flat), flat, np.inf), axis=-1)[..., None, None]
        hi = np.nanmax(np.where(np.isfinite(flat), flat, -np.inf), axis=-1)[..., None, None]
        span = hi - lo
        y = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.5)
    return np.where(np.isfinite(y), y, 0.0)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types
        raise DataError(f"{path}: cannot read the weights file ({type(err).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DataError(f"{path}: the weights file holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


# ---- selection ----------------------------------------------------------------------------------


def load_extractor(path: str | os.PathLike) -> RadarFeatureExtractor | InceptionExtractor:
    """A radardiff extractor folder, or a local InceptionV3 weights file (.pth/.pt/.safetensors)."""
    path = Path(path)
    if path.is_dir():
        return RadarFeatureExtractor.load(path)
    if path.suffix in (".pth", ".pt", ".safetensors"):
        return InceptionExtractor(path)
    if not path.exists():
        raise DataError(f"{path}: feature extractor not found")
    raise DataError(
        f"{path}: not a feature extractor (a folder from 'radardiff features train' or an "
        "InceptionV3 .pth/.pt/.safetensors file)"
    )


def features_of(
    extractor: FeatureExtractor, ds: DatasetFile, indices: np.ndarray, block: int = 512
) -> np.ndarray:
    """Features (len(indices), D) of samples ``indices`` of an open dataset file, in blocks."""
    extractor.check_fits(ds.info)
    parts = [
        extractor.features(ds.images(indices[s : s + block])) for s in range(0, len(indices), block)
    ]
    return np.concatenate(parts)


def features_for(
    extractor: str | os.PathLike | FeatureExtractor,
    dataset_file: str | os.PathLike,
    *,
    max_samples: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Features of a dataset file (at most ``max_samples``, a subset seeded with ``seed``)."""
    ext = load_extractor(extractor) if isinstance(extractor, str | os.PathLike) else extractor
    with DatasetFile(dataset_file) as ds:
        n = len(ds)
        idx = np.arange(n)
        if max_samples is not None and n > max_samples:
            idx = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
        return features_of(ext, ds, idx)
