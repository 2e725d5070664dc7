"""Models that ship with radardiff, and the exported-model folder they are stored in.

An exported model is one folder that is at once

- a diffusers model directory: ``config.json`` and ``diffusion_pytorch_model.safetensors`` (half
  precision for the shipped ones), so ``UNet2DModel.from_pretrained(folder)`` loads it;
- a radardiff run that needs no training files: ``config.toml``, ``normalizer.json``,
  ``data_info.json`` and ``state.json`` (the step it was exported at), which
  :func:`radardiff.models.load_run` loads like a run directory;
- a model card, ``README.md`` in the Hugging Face layout (YAML header, then what it generates,
  its data, recipe, sampler and measured scores), with the same facts machine-readable in
  ``radardiff.json``;
- ``manifest.json``: the SHA-256 of every other file and the network's settings, checked at load.

The shipped models live in ``radardiff/pretrained/NAME/`` inside the package; every command that
reads a run accepts their NAME in place of a run directory (:func:`resolve_run`) and none may
write into them (:func:`refuse_shipped`). ``tools/build_pretrained.py`` retrains and re-exports
them all.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from radardiff.errors import RunDirError

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
FACTS = "radardiff.json"
CARD = "README.md"
STATE = "state.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def is_exported(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an exported-model folder (not a training run directory)."""
    p = Path(path)
    return (p / WEIGHTS_FILE).is_file() and (p / "config.toml").is_file() and (p / FACTS).is_file()


def shipped_models(root: Path | None = None) -> dict[str, Path]:
    """Name -> folder of every model shipped in ``root`` (default: the package's)."""
    root = PRETRAINED if root is None else root
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and is_exported(p)}


def _known(root: Path | None = None) -> str:
    names = list(shipped_models(root))
    return ", ".join(names) if names else "none"


def looks_like_name(value: str) -> bool:
    """A bare name (no folder separator, not '.' or '..'): what a shipped model is called by."""
    return os.sep not in value and "/" not in value and value not in (".", "..", "")


def resolve_run(value: str | os.PathLike, root: Path | None = None) -> Path:
    """The folder of a run argument: an existing path as it is, else a shipped model's folder.

    A bare name that is neither a folder here nor a shipped model is refused in one line that
    lists the shipped models; any other path is returned for the caller's own error.
    """
    path = Path(value)
    if path.exists():
        return path
    shipped = shipped_models(root)
    if str(value) in shipped:
        return shipped[str(value)]
    if looks_like_name(str(value)):
        raise RunDirError(
            f"{value}: no such run directory or shipped model (shipped: {_known(root)}; "
            "'radardiff models' lists them)"
        )
    return path


def is_shipped(path: str | os.PathLike, root: Path | None = None) -> bool:
    """Whether ``path`` is, or lies inside, the shipped models' folder."""
    root = (PRETRAINED if root is None else root).resolve()
    p = Path(path).resolve()
    return p == root or root in p.parents


def refuse_shipped(value: str | os.PathLike, option: str, root: Path | None = None) -> None:
    """Refuse a shipped model (by name or folder) where a writable run is needed."""
    path = Path(value)
    named = not path.exists() and str(value) in shipped_models(root)
    if named or is_shipped(path, root) or (path.exists() and is_exported(path)):
        raise RunDirError(
            f"{option} {value}: a shipped (read-only) model, not a run this command may write; "
            "give a folder of your own (e.g. runs/mine)"
        )


def read_facts(folder: Path) -> dict:
    """The card's machine-readable facts (``radardiff.json``) of an exported model."""
    try:
        return json.loads((folder / FACTS).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunDirError(f"{folder / FACTS}: missing or unreadable ({err})") from None


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def copy_run_files(run_root: Path, ckpt: Path, dest: Path) -> None:
    """The run's own files an exported model keeps."""
    for name in ("config.toml", "normalizer.json", "data_info.json"):
        shutil.copy2(run_root / name, dest / name)
    shutil.copy2(ckpt / STATE, dest / STATE)
