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
# evaluate/ is split in two: the modules of the package itself are its drivers (they read dataset
# files, train or load networks, and write results), the pure metrics they call live in
# evaluate/measures/. A new module has to be named here or go to measures/.
EVALUATE_DRIVERS = {
    "metrics",
    "study",
    "downstream",
    "likelihood",
    "extractor",
    "tasks",
    "classification",
    "curve",
    "map_relations",
}
MEASURES = SRC / "evaluate" / "measures"
# What a pure metric may not import: file formats, file systems, datasets, networks and weights,
# result writers, and the drivers themselves. Arrays in, numbers out.
FILE_IO_MODULES = (
    "h5py",
    "json",
    "csv",
    "pickle",
    "io",
    "os",
    "shutil",
    "tempfile",
    "pathlib",
    "tomllib",
    "safetensors",
    "torch",
    "radardiff.data",
    "radardiff.config",
    "radardiff.models",
    "radardiff._files",
    *(f"radardiff.evaluate.{d}" for d in EVALUATE_DRIVERS),
)
# ... nor call what reads or writes a file, whatever it was imported as
FILE_IO_CALLS = {
    "open",
    "load",
    "loadtxt",
    "save",
    "savez",
    "savez_compressed",
    "savetxt",
    "fromfile",
    "tofile",
    "dump",
    "read_text",
    "write_text",
    "read_bytes",
    "write_bytes",
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _file_io(path: Path) -> list[str]:
    """The imports and calls of ``path`` that read or write files (see FILE_IO_*)."""
    found = [
        f"imports {name}"
        for name in _imports(path)
        if any(name == m or name.startswith(m + ".") for m in FILE_IO_MODULES)
    ]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            f = node.func
            called = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
            if called in FILE_IO_CALLS:
                found.append(f"calls {called}() at line {node.lineno}")
    return found


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
    # evaluate's drivers too: writing results needs no CLI, plots or process groups
    if _layer_of(path) not in MATH | {"evaluate"}:
        return
    for name in _imports(path):
        assert not name.startswith(FORBIDDEN_IN_MATH), f"{path.relative_to(SRC)} imports {name}"


def test_evaluate_is_drivers_and_measures():
    here = {p.stem for p in (SRC / "evaluate").glob("*.py")} - {"__init__"}
    why = "evaluate/: drivers are named in EVALUATE_DRIVERS, pure metrics go to evaluate/measures/"
    assert here == EVALUATE_DRIVERS, why
    assert len(list(MEASURES.glob("*.py"))) > 1


@pytest.mark.parametrize(
    "path", sorted(MEASURES.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC))
)
def test_pure_metrics_do_no_file_io(path: Path):
    assert not _file_io(path), f"{path.relative_to(SRC)}: {_file_io(path)}"


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


def test_checker_catches_file_io(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import h5py\nfrom radardiff.data.dataset_file import DatasetFile\n"
        "from radardiff.config.io import atomic_write_text\nimport numpy as np\n"
        "def f(p, x):\n    np.savez(p, x=x)\n    return open(p).read()\n"
    )
    found = _file_io(bad)
    assert [f for f in found if f.startswith("imports")] == [
        "imports h5py",
        "imports radardiff.data.dataset_file",
        "imports radardiff.config.io",
    ]
    assert {f.split("(")[0] for f in found if f.startswith("calls")} == {
        "calls savez",
        "calls open",
    }
    fine = tmp_path / "fine.py"
    fine.write_text("import numpy as np\nimport iolib\ndef f(x):\n    return np.mean(x)\n")
    assert _file_io(fine) == []
