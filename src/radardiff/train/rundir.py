"""The training side of a run directory: checked and made at a start, its normalisation fitted
or read back, and what a failed start made removed again."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np

from radardiff.config import RunConfig, RunDir, atomic_write_text, load_config, save_config
from radardiff.data.dataset_file import DatasetFile
from radardiff.data.maps import MapEncoder, select_channels
from radardiff.data.normalize import Normalizer, valid_sample_indices
from radardiff.errors import ConfigError, RunDirError
from radardiff.models.run import architecture
from radardiff.train.logs import truncate_stats

log = logging.getLogger(__name__)


def data_info_dict(info) -> dict:
    """What sampling needs to know of the training data (kind, units, classes, shape)."""
    return {
        "kind": info.kind,
        "units": info.units,
        "class_names": info.class_names,
        "pixel_spacing_m": info.pixel_spacing_m,
        "shape": list(info.shape),
        "source": str(info.path),
    }


def check_resumable(run: RunDir, cfg: RunConfig, method: str, resume: bool) -> None:
    """A resumed run must be one of this objective and this architecture; a new one must not
    overwrite a run that holds checkpoints."""
    if not resume:
        if run.checkpoints.exists() and any(run.checkpoints.glob("step_*")):
            raise RunDirError(
                f"{run.root}: already holds checkpoints; pass --resume or choose a new --out"
            )
        return
    run.require()
    saved = load_config(run.config)
    if saved.distill.method != method:
        how = "radardiff train" if saved.distill.method == "none" else "radardiff distill"
        raise RunDirError(
            f"{run.config}: a run of distill.method '{saved.distill.method}'; "
            f"continue it with {how} --resume"
        )
    if architecture(saved) != architecture(cfg):
        raise RunDirError(
            f"{run.config}: cannot resume: the model or diffusion settings differ from the run's "
            "(start a new run directory instead)"
        )


def make_run_dir(run: RunDir, cfg: RunConfig, data: DatasetFile, resume: bool) -> None:
    """The run directory with its config and data description (main process only), cleared of
    what an interrupted writer left."""
    run.root.mkdir(parents=True, exist_ok=True)
    for tmp in sorted(run.checkpoints.glob(".step_*.tmp")):
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("%s: removed an unfinished checkpoint of an interrupted write", tmp)
    if resume and run.latest_checkpoint() is None:
        truncate_stats(run.stats, 0)  # killed before its first checkpoint: start over
    save_config(cfg, run.config)
    atomic_write_text(run.data_info, json.dumps(data_info_dict(data.info)))


def normalizer_of(
    run: RunDir, cfg: RunConfig, data: DatasetFile, resume: bool, given: Normalizer | None
) -> tuple[Normalizer, bool]:
    """The run's normalisation and whether it is new (to be saved): the saved one on resume,
    else ``given`` (an objective's), else fitted to ``data``."""
    if resume and run.normalizer.is_file():
        norm = Normalizer.load(run.normalizer)
        norm.valid_indices = valid_sample_indices(data, to_db=norm.to_db)
        if norm.channels != data.info.channels:
            raise RunDirError(
                f"{data.path}: has {data.info.channels} channel(s) but the run was trained on "
                f"{norm.channels}"
            )
        if norm.maps is not None:
            select_channels(data.info.maps, norm.maps.channels, str(data.path))
        return norm, False
    if given is not None:
        return given, True
    norm = Normalizer.fit(data, cfg.data.normalization, resolve_to_db(cfg.data.to_db, data))
    norm.maps = map_encoder_of(cfg, data)
    return norm, True


def map_encoder_of(cfg: RunConfig, data: DatasetFile) -> MapEncoder | None:
    """The encoder of the maps ``model.maps`` names (None without), fitted on ``data``."""
    names = cfg.model.maps
    if not names:
        return None
    if not data.info.maps:
        raise ConfigError(
            f"{data.path}: model.maps = {list(names)} but the file holds no maps (data prepare "
            "--map, or a map generator of data synth)"
        )
    enc = MapEncoder.fit(str(data.path), data.info.maps, data.maps, names, data.info.n)
    log.info("%s: conditioned on maps %s", data.path, enc.describe())
    return enc


def resolve_to_db(to_db: bool | str, data: DatasetFile) -> bool:
    """``data.to_db`` for this file: ``auto`` converts SAR backscatter in linear units; dB data
    (units dB, or negative values) given to ``true`` are refused, not turned into no data."""
    if to_db is False:
        return False
    info = data.info
    db_units = info.units.strip().lower() in ("db", "decibel", "decibels")
    negative = db_units or any(
        np.nanmin(b) < 0 for _, b in data.iter_blocks(4096) if np.isfinite(b).any()
    )
    if to_db == "auto":
        convert = info.kind == "sar_backscatter" and not negative
        log.info("%s: data.to_db = auto: %s", data.path,
                 "linear backscatter, converted to dB" if convert else "not converted")  # fmt: skip
        return convert
    if negative:
        why = "its units are dB" if db_units else "it holds negative values"
        raise ConfigError(
            f"{data.path}: data.to_db converts linear intensity to dB, but {why}; "
            "set data.to_db = false (or auto)"
        )
    return True


def check_data_fits(cfg: RunConfig, data: DatasetFile, norm_channels: int) -> None:
    """The training data fit the configured network (size, channels, labels, range
    conditioning's normalisation)."""
    info = data.info
    if info.height != cfg.model.image_size or info.width != cfg.model.image_size:
        raise ConfigError(
            f"{data.path}: images are {info.height}x{info.width} but model.image_size is "
            f"{cfg.model.image_size}"
        )
    if norm_channels != cfg.model.in_channels:
        raise ConfigError(
            f"{data.path}: data give {norm_channels} channel(s) to the network but "
            f"model.in_channels is {cfg.model.in_channels}"
        )
    if cfg.model.range_conditioning and cfg.data.normalization not in ("minmax_pm1", "minmax_01"):
        raise ConfigError(
            "model.range_conditioning needs a per-sample min-max data.normalization "
            f"(minmax_pm1 or minmax_01), not {cfg.data.normalization}; with another "
            "normalisation set model.range_conditioning=false"
        )
    check_labels(cfg, data)


def check_labels(cfg: RunConfig, data: DatasetFile) -> None:
    k = cfg.model.num_classes
    if not k:
        return
    if not data.info.has_labels:
        raise ConfigError(f"{data.path}: model.num_classes is set but the file has no labels")
    labels = data.labels()
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        bad = int(labels.max()) if labels.max() >= k else int(labels.min())
        raise ConfigError(
            f"{data.path}: holds label {bad}, outside 0..{k - 1} (model.num_classes = {k})"
        )


def check_validation(cfg: RunConfig, data: DatasetFile) -> None:
    """The validation file, if any, has the training images' shape and valid labels."""
    if not cfg.data.val:
        return
    val = DatasetFile(cfg.data.val)
    check_labels(cfg, val)
    if val.info.shape != data.info.shape:
        raise ConfigError(
            f"{val.path}: validation images are {val.info.shape}, training images {data.info.shape}"
        )


def remove_created(run: RunDir, existed: bool, more: tuple[str, ...] = ()) -> None:
    """What a fresh start made goes: the whole folder if it made it, else its own files (and
    ``more``, entries an objective made)."""
    root = run.root
    if not existed:
        shutil.rmtree(root, ignore_errors=True)
        return
    for path in (run.config, run.normalizer, run.data_info, run.stats):
        path.unlink(missing_ok=True)
    for folder in (run.tensorboard, run.checkpoints, *(root / name for name in more)):
        shutil.rmtree(folder, ignore_errors=True)
    (root / ".lock").unlink(missing_ok=True)
