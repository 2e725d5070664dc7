"""The downstream reference tasks: their networks trained and run on pairs files
(:mod:`radardiff.data.pairs`).

- ``recovery``: :class:`~radardiff.models.downstream.SmallUNet`, input -> deformation field,
  mean squared error over the input's valid pixels;
- ``detection``: :class:`~radardiff.models.downstream.SmallCNN`, input -> logit of "deformation
  present", binary cross-entropy;
- ``unwrapping``: the U-Net, wrapped phase (cos, sin, mask) -> unwrapped phase, mean squared
  error over the valid pixels after the mean error of each field is removed (the truth is known
  up to a constant: the network is not asked for the field's absolute level);
- ``classification``: the same network with one logit per class, on a labelled image set of any
  kind (:func:`load_labelled`: SAR in dB, one or two polarisations, phase, digits), cross-entropy;
  each channel standardised with the training images' mean and standard deviation;
- ``segmentation``: the U-Net with one logit per class and pixel, on images with a label map
  (:func:`load_segmented`: a prepared real set with ``--map``, generated samples of a
  map-conditioned run, ``data synth sar_map``), per-pixel cross-entropy over the labelled valid
  pixels, inputs standardised as for classification; scored by intersection over union.

AdamW with a linear warm-up and cosine decay (bf16 autocast with ``precision='bf16'``); a validation share of the pairs (``val_fraction``,
drawn with the seed) picks the best step (lowest validation RMSE, highest validation AUC) and,
for detection, the decision threshold (highest validation accuracy); classification picks the step of highest
validation balanced accuracy, and ``augment`` adds the eight flips and quarter turns of each
training image (for data whose classes do not depend on orientation). Everything random comes
from the seed: the same file, config and seed give the same network.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from radardiff import _stop
from radardiff._files import holding
from radardiff._hardware import resolve_precision
from radardiff.data.dataset_file import DatasetFile
from radardiff.data.maps import select_channels
from radardiff.errors import ConfigError, DataError
from radardiff.evaluate.measures.skill import (
    best_threshold,
    classification_score,
    recovery_score,
    roc_auc,
    segmentation_score,
    unwrapping_score,
)
from radardiff.models.downstream import build, encode, encode_channels, save_task

TASKS = {
    "recovery": "unet",
    "detection": "cnn",
    "unwrapping": "unet",
    "classification": "classifier",
    "segmentation": "segmenter",
}
LABELLED_TASKS = ("classification", "segmentation")  # trained on labelled image sets
FIELD_TASKS = ("recovery", "unwrapping")  # per-pixel outputs, scaled by the network's 'scale'


@dataclass(frozen=True)
class TaskConfig:
    task: str
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    width: int = 16
    levels: int = 3
    val_fraction: float = 0.1
    val_every: int = 100
    seed: int = 0
    precision: str = "no"
    augment: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"--task: unknown task '{self.task}'; expected {', '.join(TASKS)}")
        for key in ("steps", "batch_size", "width", "levels", "val_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')}: must be at least 1")
        if self.precision not in ("no", "bf16", "auto"):
            raise ConfigError(f"--precision: 'no', 'bf16' or 'auto', got '{self.precision}'")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction: must be in (0, 1), got {self.val_fraction}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr: must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(
                f"weight_decay: must be a finite number >= 0, got {self.weight_decay}"
            )
        if self.seed < 0:
            raise ConfigError(f"--seed: must be >= 0, got {self.seed}")


@dataclass
class Pairs:
    """A pairs file in memory: inputs (N, 1, H, W) with NaN, and the task's targets; or a
    labelled image set (inputs (N, C, H, W), targets the class indices into ``classes``)."""

    path: str
    inputs: np.ndarray
    targets: np.ndarray  # (N, 1, H, W) deformation, (N,) 0/1 presence or (N,) class
    wrapped: bool
    units: str
    record: str = ""  # identifies the pairs: a hash of their recipe and count
    classes: list[str] | None = None
    kind: str = ""
    label_map: str | None = None  # segmentation: the map channel whose classes are the targets

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.inputs)


def load_pairs(path, task: str) -> Pairs:
    """Read a pairs file for ``task``; a file that cannot serve the task is refused."""
    f = DatasetFile(path)
    if "pairs" not in f.attrs() or "deformation" not in f.info.extras:
        raise DataError(f"{path}: not a pairs file (make one with 'radardiff downstream pairs')")
    if task == "detection":
        labels = f.labels()
        if labels is None:
            raise DataError(
                f"{path}: no presence labels; detection needs pairs made with --label presence"
            )
        if np.unique(labels).size < 2:
            raise DataError(f"{path}: every pair has the same presence label; detection needs both")
        targets = labels.astype(np.float32)
    elif task == "unwrapping":
        if f.info.kind != "insar_wrapped" or "unwrapped" not in f.info.extras:
            raise DataError(
                f"{path}: no unwrapped truth; unwrapping needs pairs made with --wrap --label "
                "unwrapped"
            )
        targets = f.extra("unwrapped").astype(np.float32)
    else:
        targets = f.extra("deformation").astype(np.float32)
    inputs = f.images().astype(np.float32)
    if not np.isfinite(inputs).reshape(len(inputs), -1).any(axis=1).all():
        raise DataError(f"{path}: some pairs have no valid pixel")
    text = f"{f.attrs()['pairs']}|{f.info.n}"
    record = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Pairs(str(path), inputs, targets, f.info.kind == "insar_wrapped", f.info.units, record)


def load_labelled(paths, classes: list[str] | None = None) -> Pairs:
    """The images and class labels of one or more dataset files (one set, for classification).

    Labels are matched by class name: with ``classes`` (a network's), in that order, and a class
    of a file that is not among them is refused; without, the first file's classes, which the
    other files must hold too. The files must agree on kind, units and image shape.
    """
    paths = [paths] if isinstance(paths, str | bytes) or not hasattr(paths, "__iter__") else paths
    images, labels, digest, first = [], [], hashlib.sha256(), None
    for path in paths:
        f = DatasetFile(path)
        info, lab = f.info, f.labels()
        if lab is None or not info.class_names:
            raise DataError(f"{path}: no class labels; classification needs a labelled set")
        if first is None:
            first = info
            classes = list(classes) if classes is not None else list(info.class_names)
        elif (info.kind, info.units, info.shape) != (first.kind, first.units, first.shape):
            raise DataError(
                f"{path}: {info.kind} ({info.units}) of shape {info.shape}, but {paths[0]} "
                f"holds {first.kind} ({first.units}) of shape {first.shape}"
            )
        mine = list(info.class_names)
        to_ref = _to_reference(path, mine, [mine[i] for i in np.unique(lab)], classes, "")
        x = f.images().astype(np.float32)
        if not np.isfinite(x).reshape(len(x), -1).any(axis=1).all():
            raise DataError(f"{path}: some images have no valid pixel")
        images.append(x)
        labels.append(to_ref[lab])
        digest.update(f"{Path(path).resolve()}|{info.n}|{Path(path).stat().st_mtime_ns}".encode())
    return Pairs(
        ",".join(map(str, paths)), np.concatenate(images), np.concatenate(labels),
        first.kind == "insar_wrapped", first.units, digest.hexdigest()[:16], classes, first.kind,
    )  # fmt: skip


def _to_reference(path, mine: list[str], used: list[str], classes: list[str], what: str):
    """Each of a file's classes (``mine``) as its index in ``classes`` (-1 for one it does not
    use); a class it uses that ``classes`` lacks is refused."""
    missing = [c for c in used if c not in classes]
    if missing:
        raise DataError(
            f"{path}: class '{missing[0]}'{what} is not among the classes it is compared with "
            f"({', '.join(classes)})"
        )
    return np.array([classes.index(c) if c in classes else -1 for c in mine], np.int64)


def label_map_of(path, info, name: str | None) -> str:
    """The label map a segmentation uses: ``name``, else the file's only label map."""
    labels = [c.name for c in info.maps if c.categorical]
    if name is not None:
        if name not in labels:
            raise DataError(
                f"{path}: no label map '{name}' (label maps: {', '.join(labels) or 'none'})"
            )
        return name
    if len(labels) != 1:
        raise DataError(
            f"{path}: segmentation needs a label map; "
            + (f"it holds {', '.join(labels)}: name one" if labels else "it holds none "
               "(data prepare --map NAME=... --map-classes, or a map generator)")
        )  # fmt: skip
    return labels[0]


def load_segmented(paths, classes: list[str] | None = None, map_name: str | None = None) -> Pairs:
    """Images and their per-pixel labels (a label map of each file, matched by class name as
    :func:`load_labelled` matches classes), targets (N, H, W) int64 with -1 where the map or the
    image has no data."""
    paths = [paths] if isinstance(paths, str | bytes | Path) else list(paths)
    images, targets, digest, first = [], [], hashlib.sha256(), None
    for path in paths:
        f = DatasetFile(path)
        info = f.info
        name = label_map_of(path, info, map_name)
        channel = next(c for c in info.maps if c.name == name)
        if first is None:
            first, map_name = info, name
            classes = list(classes) if classes is not None else list(channel.classes or ())
        elif (info.kind, info.units, info.shape) != (first.kind, first.units, first.shape):
            raise DataError(
                f"{path}: {info.kind} ({info.units}) of shape {info.shape}, but {paths[0]} "
                f"holds {first.kind} ({first.units}) of shape {first.shape}"
            )
        m = f.maps()[:, select_channels(info.maps, [name], str(path))[0]]
        mine = list(channel.classes or ())
        used = [mine[int(i)] for i in np.unique(m[np.isfinite(m)])]
        to_ref = _to_reference(path, mine, used, classes, f" of label map '{name}'")
        x = f.images().astype(np.float32)
        y = np.where(np.isfinite(m), to_ref[np.nan_to_num(m).astype(np.int64)], -1)
        y[~np.isfinite(x).all(axis=1)] = -1
        images.append(x)
        targets.append(y)
        digest.update(f"{Path(path).resolve()}|{info.n}|{Path(path).stat().st_mtime_ns}".encode())
    return Pairs(
        ",".join(map(str, paths)), np.concatenate(images), np.concatenate(targets),
        first.kind == "insar_wrapped", first.units, digest.hexdigest()[:16], classes, first.kind,
        map_name,
    )  # fmt: skip


def split(
    n: int, fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices, ``round(fraction * n)`` for validation; with ``labels``,
    stratified (that share of each class), so every class reaches both sides."""
    rng = np.random.default_rng([seed, 3])
    groups = (
        [np.arange(n)]
        if labels is None
        else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    )
    val = []
    for g in groups:
        k = int(round(fraction * g.size))
        if k < 1 or g.size - k < 1:
            raise DataError(
                f"{n} pairs with --val-fraction {fraction} leave an empty training or validation "
                "set" + ("" if labels is None else " for one class")
            )
        val.append(rng.permutation(g)[:k])
    va = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(n), va), va


def _input_scale(p: Pairs, idx: np.ndarray, task: str = "recovery") -> float:
    """The network's scale: of the inputs (unwrapped phase), or of the mean-referenced truth
    (unwrapping, whose inputs are wrapped), so that the network sees and makes values near 1."""
    if task == "unwrapping":
        t = p.targets[idx].astype(np.float64)
        t = t - np.nanmean(t, axis=(1, 2, 3), keepdims=True)
        s = float(np.nanstd(t))
        return s if math.isfinite(s) and s > 0 else 1.0
    if p.wrapped:
        return 1.0
    x = p.inputs[idx]
    s = float(np.nanstd(x))
    return s if math.isfinite(s) and s > 0 else 1.0


def _channel_stats(p: Pairs, idx: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the valid pixels of ``p.inputs[idx]``."""
    x = p.inputs[idx]
    mean = np.nanmean(x, axis=(0, 2, 3)).astype(np.float64)
    std = np.nanstd(x, axis=(0, 2, 3)).astype(np.float64)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return [float(m) for m in mean], [float(s) for s in std]


def _encode(meta: dict, x: torch.Tensor) -> torch.Tensor:
    if meta["task"] in LABELLED_TASKS:
        return encode_channels(x, meta["wrapped"], torch.tensor(meta["mean"]),
                               torch.tensor(meta["std"]))  # fmt: skip
    return encode(x, meta["wrapped"], meta["scale"])


def _dihedral(rng: np.random.Generator, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """One of the eight flips and quarter turns, the same for every tensor (B, C, H, W)."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for t in tensors:
        t = torch.rot90(t, k, dims=(2, 3)) if k else t
        out.append(torch.flip(t, dims=(3,)) if flip else t)
    return out


def _loss(task: str, out: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    if task == "detection":
        return torch.nn.functional.binary_cross_entropy_with_logits(out, target)
    if task == "classification":
        return torch.nn.functional.cross_entropy(out, target)
    if task == "segmentation":
        if not (target >= 0).any():
            return out.sum() * 0.0  # a batch without labelled pixels teaches nothing
        return torch.nn.functional.cross_entropy(out, target, ignore_index=-1)
    m = valid.to(out.dtype)
    if task == "unwrapping":
        m = m * torch.isfinite(target).to(out.dtype)
        d = (out - torch.nan_to_num(target)) * m
        count = m.sum(dim=(2, 3), keepdim=True)
        d = (d - d.sum(dim=(2, 3), keepdim=True) / count.clamp_min(1)) * m
        return (d**2).sum() / m.sum().clamp_min(1)
    return ((out - target) ** 2 * m).sum() / m.sum().clamp_min(1)


@torch.no_grad()
def predict(net: torch.nn.Module, meta: dict, inputs: np.ndarray, batch: int = 256) -> np.ndarray:
    """Deformation fields (N, 1, H, W) in the pairs' units, detection logits (N,), class
    logits (N, K) or per-pixel class logits (N, K, H, W)."""
    net.eval()
    dev = next(net.parameters()).device
    outs = []
    for i in range(0, len(inputs), batch):
        y = net(_encode(meta, torch.from_numpy(inputs[i : i + batch]).to(dev))).float().cpu()
        outs.append((y * meta["scale"]).numpy() if meta["task"] in FIELD_TASKS else y.numpy())
    return np.concatenate(outs)


def _validate(net, meta, p: Pairs, idx: np.ndarray) -> float:
    """The validation score to maximise: -RMSE (recovery), AUC (detection) or balanced
    accuracy (classification)."""
    out = predict(net, meta, p.inputs[idx])
    if meta["task"] == "detection":
        return roc_auc(out, p.targets[idx])
    if meta["task"] == "classification":
        return classification_score(out, p.targets[idx]).balanced_accuracy
    if meta["task"] == "segmentation":
        return segmentation_score(out, p.targets[idx]).mean_iou
    if meta["task"] == "unwrapping":
        return -unwrapping_score(out, p.targets[idx], p.valid[idx]).rmse
    return -recovery_score(out, p.targets[idx], p.valid[idx]).rmse


@dataclass
class TrainedTask:
    net: torch.nn.Module
    meta: dict


@holding("out")
def train_task(
    pairs: Pairs,
    cfg: TaskConfig,
    out=None,
    on_progress: Callable[[int], None] | None = None,
    device: str = "cpu",
) -> TrainedTask:
    """Train the task's network on ``pairs`` (on ``device``); saved to the directory ``out``
    when given. The network does not depend on the device beyond floating-point rounding."""
    dev = torch.device(device)
    bf16 = resolve_precision(cfg.precision, dev, "--precision") == "bf16"
    classify = cfg.task in LABELLED_TASKS
    if classify != (pairs.classes is not None) or (cfg.task == "segmentation") != (
        pairs.label_map is not None
    ):
        raise DataError(
            f"{pairs.path}: " + (f"not a labelled image set for {cfg.task}" if classify else
                                 f"a labelled image set, not pairs for {cfg.task}")
        )  # fmt: skip
    labels = pairs.targets if cfg.task in ("detection", "classification") else None
    tr, va = split(len(pairs.inputs), cfg.val_fraction, cfg.seed, labels)
    meta = _describe_net(pairs, cfg, tr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = build(TASKS[cfg.task], pairs.wrapped, cfg.width, cfg.levels,
                    meta.get("channels", 1), len(pairs.classes or [None])).to(dev)  # fmt: skip
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    rng = np.random.default_rng([cfg.seed, 4])
    x_all = torch.from_numpy(pairs.inputs)
    t_all = torch.from_numpy(pairs.targets)
    best, best_state, history = -math.inf, None, []
    for step in range(1, cfg.steps + 1):
        _stop.check()
        net.train()
        b = torch.from_numpy(rng.choice(tr, size=min(cfg.batch_size, tr.size), replace=False))
        x = x_all[b].to(dev)
        target = (t_all[b] / meta["scale"] if cfg.task in FIELD_TASKS else t_all[b]).to(dev)
        if cfg.augment and cfg.task == "segmentation":
            x, target = _dihedral(rng, x, target[:, None])
            target = target[:, 0]
        elif cfg.augment and cfg.task in FIELD_TASKS:
            x, target = _dihedral(rng, x, target)
        elif cfg.augment:
            (x,) = _dihedral(rng, x)
        with torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
            pred = net(_encode(meta, x)).float()
        loss = _loss(cfg.task, pred, target, torch.isfinite(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % cfg.val_every == 0 or step == cfg.steps:
            score = _validate(net, meta, pairs, va)
            history.append({"step": step, "loss": loss.item(), "val": score})
            if score > best:
                best, best_state = score, {k: v.clone() for k, v in net.state_dict().items()}
                meta["best_step"] = step
        if on_progress is not None:
            on_progress(1)
    net.load_state_dict(best_state)
    meta["val_score"] = best
    meta["history"] = history
    if cfg.task == "detection":
        meta["threshold"] = best_threshold(predict(net, meta, pairs.inputs[va]), pairs.targets[va])
    if out is not None:
        save_task(net.cpu(), meta, out)
    return TrainedTask(net.cpu().eval(), meta)


def _describe_net(pairs: Pairs, cfg: TaskConfig, tr: np.ndarray) -> dict:
    """The network's ``task.json``: what it is, how its inputs are encoded, what it learned on."""
    meta = {"task": cfg.task, "arch": TASKS[cfg.task], "wrapped": pairs.wrapped,
            "width": cfg.width, "levels": cfg.levels, "scale": _input_scale(pairs, tr, cfg.task),
            "units": pairs.units, "config": asdict(cfg), "train_pairs": pairs.path,
            "train_pairs_record": pairs.record}  # fmt: skip
    if pairs.classes is not None:
        mean, std = _channel_stats(pairs, tr)
        meta.update(channels=int(pairs.inputs.shape[1]), classes=list(pairs.classes),
                    mean=mean, std=std, kind=pairs.kind)  # fmt: skip
    if pairs.label_map is not None:
        meta["label_map"] = pairs.label_map
    return meta


def _lr_factor(step: int, cfg: TaskConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
