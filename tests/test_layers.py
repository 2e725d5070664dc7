"""The import direction of DESIGN.md, checked on the source (ast), not by convention."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "radardiff"
LAYERS = [
    "config",
    "data",
    "accel",
    "models",
    "diffusion",
    "train",
    "sample",
    "evaluate",
    "report",
    "cli",
]
BASE = {
    "errors",
    "_version",
    "_files",
    "_hardware",
    "_stop",
    "_budget",
    "__init__",
    "__main__",
}  # importable from every layer
MATH = {"data", "accel", "models", "diffusion"}
FORBIDDEN_IN_MATH = ("torch.distributed", "matplotlib", "click", "typer", "accelerate")
# evaluate's metric functions are math too; its driver (metrics.py) does the file I/O
EVALUATE_MATH_EXEMPT = {"metrics"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _layer_of(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 else Path(rel[0]).stem


def _modules():
    return sorted(p for p in SRC.rglob("*.py"))


def test_every_layer_exists():
    for layer in LAYERS:
        assert (SRC / layer / "__init__.py").is_file(), layer


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_left(path: Path):
    here = _layer_of(path)
    if here == "__main__":
        allowed = set(LAYERS)  # the entry point of `python -m radardiff`
    elif here in BASE:
        allowed = set()
    else:
        allowed = set(LAYERS[: LAYERS.index(here) + 1])
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] != "radardiff" or len(parts) == 1:
            continue
        target = parts[1]
        if target in BASE:
            continue
        assert target in allowed, f"{path.relative_to(SRC)} ({here}) imports {name} ({target})"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_math_layers_stay_pure(path: Path):
    here = _layer_of(path)
    math_module = here in MATH or (here == "evaluate" and path.stem not in EVALUATE_MATH_EXEMPT)
    if not math_module:
        return
    for name in _imports(path):
        assert not name.startswith(FORBIDDEN_IN_MATH), f"{path.relative_to(SRC)} imports {name}"


def test_config_does_not_import_torch():
    for path in (SRC / "config").rglob("*.py"):
        assert not any(n.split(".")[0] == "torch" for n in _imports(path)), path


def test_checker_catches_a_right_to_left_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from radardiff.train import train\nimport matplotlib.pyplot\n")
    names = _imports(bad)
    assert "radardiff.train" in names and "matplotlib.pyplot" in names


UNIT = "accel"  # the acceleration unit: optional, reached through one boundary
BOUNDARY = SRC / "models" / "network.py"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_only_the_boundary_reaches_into_the_acceleration_unit(path: Path):
    """train/, sample/, distillation and the CLI never name a kernel: they describe what they
    want (models.network.NetworkPolicy) and the boundary asks the unit."""
    if _layer_of(path) == UNIT or path == BOUNDARY:
        return
    for name in _imports(path):
        parts = name.split(".")
        assert parts[:2] != ["radardiff", UNIT], f"{path.relative_to(SRC)} imports {name}"
