"""Load a trained run: config, normaliser, data description and a network of one checkpoint.

Everything that reads a run (sampling, evaluation, distillation, resumed training) loads it here,
below the training and sampling layers: sampling never imports the training loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import UNet2DModel

from radardiff.config import RunConfig, RunDir, load_config, validate_config
from radardiff.config.io import config_to_dict
from radardiff.config.rundir import CHECKPOINT_POINTERS
from radardiff.data.normalize import Normalizer
from radardiff.errors import RunDirError
from radardiff.models.conditioning import ConditionEmbedding
from radardiff.models.shipped import WEIGHTS_FILE, is_exported, resolve_run

WEIGHTS = ("ema", "model")
# the further EMAs of a run with several half-lives (train.ema_halflife_kimg), e.g. ema_16kimg
_MORE_EMA = re.compile(r"ema_\d+(\.\d+)?kimg")
log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    cfg: RunConfig
    run: RunDir
    checkpoint: Path
    normalizer: Normalizer
    data_info: dict
    model: UNet2DModel
    weights: str = "ema"
    weights_id: str = ""  # hash of the weights' files: what samples depend on
    # compiled networks (radardiff.models.network) by (id(network), mode), kept as long as the run
    compiled: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def identity(self) -> str:
        """The run, checkpoint and weights that samples come from (resumed parts of a request
        are reused only under the same identity)."""
        root = self.run.root.resolve()
        return f"{root}|{self.checkpoint.name}|{self.weights}|{self.weights_id}"

    @property
    def exported(self) -> bool:
        """An exported (or shipped) model folder, not a training run directory."""
        return self.checkpoint == self.run.root

    @property
    def checkpoint_name(self) -> str:
        """``step_NNNNNNN`` of the weights (an exported model's from its ``state.json``)."""
        if not self.exported:
            return self.checkpoint.name
        return RunDir.checkpoint_name(_exported_step(self.checkpoint))

    @property
    def data_channels(self) -> int:
        return self.normalizer.model_channels

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    @property
    def learned_variance(self) -> bool:
        return self.cfg.diffusion.variance == "learned_range"


MANIFEST = "manifest.json"
_HASHED = (".safetensors", ".json", ".bin", ".pt")


def architecture(cfg: RunConfig) -> dict:
    """What a checkpoint's weights mean: the network's and the diffusion's settings. An edited
    ``config.toml`` that changes them no longer describes the weights."""
    return {"model": config_to_dict(cfg.model), "diffusion": config_to_dict(cfg.diffusion)}


def _file_digest(path: Path, combined=None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            if combined is not None:
                combined.update(block)
    return digest.hexdigest()


def write_manifest(ckpt: Path, cfg: RunConfig) -> None:
    """Record the SHA-256 of every file of a checkpoint being written (``ckpt``, its temporary
    folder) and the run's :func:`architecture`, in ``manifest.json``: loading checks both."""
    files = sorted(p for p in ckpt.rglob("*") if p.is_file() and p.name != MANIFEST)
    doc = {
        "format": 1,
        "sha256": {str(p.relative_to(ckpt)): _file_digest(p) for p in files},
        "architecture": architecture(cfg),
    }
    (ckpt / MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")


def _manifest(ckpt: Path) -> dict | None:
    path = ckpt / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc.get("sha256"), dict):
            raise ValueError("no 'sha256' table")
        return doc
    except (OSError, ValueError, AttributeError) as err:
        raise RunDirError(f"{path}: unreadable checkpoint manifest ({err})") from None


_unverified: set[str] = set()


def _unverifiable(ckpt: Path) -> None:
    if str(ckpt) not in _unverified:
        _unverified.add(str(ckpt))
        log.warning(
            "%s: no manifest.json (written by an older radardiff): its weights cannot be checked "
            "for damage", ckpt,
        )  # fmt: skip


def verify_file(path: Path) -> None:
    """Check one file of a checkpoint against its manifest (optimizer state, for instance)."""
    doc = _manifest(path.parent)
    if doc is None:
        _unverifiable(path.parent)
        return
    _check_digest(path, doc["sha256"].get(path.name), _file_digest(path))


def _check_digest(path: Path, recorded: str | None, actual: str) -> None:
    if recorded is None:
        raise RunDirError(f"{path}: not in its checkpoint's manifest.json; not loaded")
    if recorded != actual:
        raise RunDirError(
            f"{path}: damaged or changed since its checkpoint was written (SHA-256 "
            f"{actual[:12]}..., recorded {recorded[:12]}...); not loaded"
        )


def weights_hash(model_dir: Path) -> str:
    """SHA-256 (first 16 hex digits) of a model directory's weight and config files, each of
    them checked, on the way, against the checkpoint's manifest (:class:`RunDirError` naming a
    file that does not match)."""
    model_dir = Path(model_dir)
    if is_exported(model_dir):
        return _exported_hash(model_dir)
    doc = _manifest(model_dir.parent)
    if doc is None:
        _unverifiable(model_dir.parent)
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*")):
        if path.suffix in _HASHED and path.is_file():
            digest.update(path.name.encode())
            actual = _file_digest(path, digest)
            if doc is not None:
                key = f"{model_dir.name}/{path.name}"
                _check_digest(path, doc["sha256"].get(key), actual)
    if doc is not None:  # every recorded file of the folder is there
        for key in doc["sha256"]:
            folder, _, name = key.partition("/")
            if folder == model_dir.name and not (model_dir / name).is_file():
                raise RunDirError(f"{model_dir / name}: missing from its checkpoint; not loaded")
    return digest.hexdigest()[:16]


def _exported_hash(folder: Path) -> str:
    """An exported model: every file it holds is checked against its manifest (the card and
    the normaliser as much as the weights), and none may be missing."""
    doc = _manifest(folder)
    if doc is None:
        raise RunDirError(f"{folder}: exported model without manifest.json; not loaded")
    digest = hashlib.sha256()
    for key in sorted(doc["sha256"]):
        path = folder / key
        if not path.is_file():
            raise RunDirError(f"{path}: missing from its exported model; not loaded")
        actual = _file_digest(path, digest if path.suffix in _HASHED else None)
        _check_digest(path, doc["sha256"][key], actual)
    return digest.hexdigest()[:16]


def check_architecture(ckpt: Path, cfg: RunConfig, config_path: Path) -> None:
    """Refuse a ``config.toml`` whose network or diffusion settings differ from those the
    checkpoint's weights were trained with (as recorded in its manifest)."""
    doc = _manifest(ckpt)
    recorded = None if doc is None else doc.get("architecture")
    if recorded is None:
        return
    now = architecture(cfg)
    # a setting newer than the checkpoint is absent from its record: the weights were trained
    # with what it does by default (model.maps: none), so its default is what it must still be
    default = architecture(validate_config({}, "defaults"))

    def was(section: str, key: str):
        old = recorded.get(section, {})
        return old[key] if key in old else default.get(section, {}).get(key)

    changed = [
        f"{section}.{key}"
        for section in sorted(set(recorded) | set(now))
        for key in sorted(set(recorded.get(section, {})) | set(now.get(section, {})))
        if was(section, key) != now.get(section, {}).get(key)
    ]
    if changed:
        first = changed[0]
        section, key = first.split(".", 1)
        raise RunDirError(
            f"{config_path}: {', '.join(changed)} differ from the settings {ckpt.name} was "
            f"trained with ({first} = {was(section, key)!r} there, "
            f"{now.get(section, {}).get(key)!r} here): the config was edited after training; "
            "restore it"
        )


def _check_network(model: UNet2DModel, cfg: RunConfig, model_dir: Path, config_path: Path):
    """A checkpoint without a manifest: at least the network's own size must be the config's."""
    size = model.config.sample_size
    if size != cfg.model.image_size:
        raise RunDirError(
            f"{config_path}: model.image_size = {cfg.model.image_size} but the network in "
            f"{model_dir} was built for {size} px: the config was edited after training"
        )


def load_model(model_dir: Path) -> UNet2DModel:
    """A diffusers model directory (safetensors), with one clear line when it cannot be read.

    A network whose class labels share the embedding with the range (diffusers
    ``class_embed_type="identity"``, :class:`~radardiff.models.conditioning.ConditionEmbedding`)
    is built here and loaded strictly: diffusers' ``from_pretrained`` would drop that
    embedding's weights with a warning."""
    try:
        config = UNet2DModel.load_config(model_dir)
        if config.get("class_embed_type") != "identity":
            return UNet2DModel.from_pretrained(model_dir)
        return _load_joint(Path(model_dir), config)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise RunDirError(f"{model_dir}: cannot load model ({err})") from None


def _load_joint(model_dir: Path, config: dict) -> UNet2DModel:
    from safetensors.torch import load_file

    state = load_file(model_dir / WEIGHTS_FILE)  # the file save_pretrained writes
    model = UNet2DModel.from_config(config)
    proj = model.time_proj.num_channels
    model.class_embedding = ConditionEmbedding.from_state(state, proj)
    model.load_state_dict(state, strict=True)  # float32, as load_run uses every network
    return model


def load_verified(model_dir: Path) -> UNet2DModel:
    """:func:`load_model` after the folder's files are checked against the manifest."""
    weights_hash(model_dir)
    return load_model(model_dir)


def _exported_step(root: Path) -> int:
    """The training step an exported model's weights were exported at (its ``state.json``)."""
    try:
        return int(json.loads((root / "state.json").read_text(encoding="utf-8")).get("step", 0))
    except (OSError, ValueError) as err:
        raise RunDirError(f"{root / 'state.json'}: missing or unreadable ({err})") from None


def _check_exported_choice(root: Path, given, weights: str, checkpoint) -> None:
    """An exported model holds one network: its EMA weights at the step it was exported."""
    if weights != "ema":
        raise RunDirError(f"{given}: an exported model holds only its EMA weights (--weights ema)")
    if checkpoint is None or checkpoint in CHECKPOINT_POINTERS:
        return
    step = _exported_step(root)
    wanted = str(checkpoint)
    if wanted not in (str(step), RunDir.checkpoint_name(step)):
        raise RunDirError(
            f"{given}: an exported model holds one checkpoint ({RunDir.checkpoint_name(step)}), "
            f"not '{checkpoint}'"
        )


def load_run(
    run_dir: str | Path,
    weights: str = "ema",
    device: str | torch.device = "cpu",
    checkpoint: int | str | None = None,
) -> LoadedRun:
    """Everything sampling needs, read from the run directory alone.

    ``run_dir``: a run directory, an exported model folder or the name of a shipped model
    (:mod:`radardiff.models.shipped`). ``checkpoint``: a step number, a checkpoint name
    (``step_0004000``), ``latest`` or ``best`` (lowest validation loss); default the recipe's
    ``sample.checkpoint`` (``latest`` unless the recipe says otherwise).
    """
    run = RunDir(resolve_run(run_dir))
    if weights not in WEIGHTS and not _MORE_EMA.fullmatch(weights):
        raise RunDirError(
            f"weights must be 'ema', 'model' or a further EMA such as 'ema_16kimg', got '{weights}'"
        )
    weights_id = None
    if is_exported(run.root):
        weights_id = weights_hash(run.root)  # every file of the folder, before any is read
        _check_exported_choice(run.root, run_dir, weights, checkpoint)
        ckpt = model_dir = run.root
        cfg = load_config(run.config)
    else:
        run.require()
        cfg = load_config(run.config)
        ckpt = run.named_checkpoint(cfg.sample.checkpoint if checkpoint is None else checkpoint)
        model_dir = ckpt / weights
        if not model_dir.is_dir():
            have = sorted(
                p.name for p in ckpt.iterdir() if p.name.startswith("ema") or p.name == "model"
            )
            raise RunDirError(f"{ckpt}: holds no weights '{weights}' (has: {', '.join(have)})")
    norm = Normalizer.load(run.normalizer)
    try:
        info = json.loads(run.data_info.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunDirError(f"{run.data_info}: missing or unreadable ({err})") from None
    check_architecture(ckpt, cfg, run.config)
    if weights_id is None:
        weights_id = weights_hash(model_dir)  # checked against the manifest before loading
    model = load_model(model_dir)
    _check_network(model, cfg, model_dir, run.config)
    return LoadedRun(
        cfg=cfg, run=run, checkpoint=ckpt, normalizer=norm, data_info=info,
        model=model.float().to(device).eval(), weights=weights,
        weights_id=weights_id,
    )  # fmt: skip
