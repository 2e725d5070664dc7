"""The shape of the code, measured from its source: lines per package, functions over 60 lines,
import cycles between modules, files outside the acceleration unit that name a kernel, README
lines. Written to ``benchmarks/results/structure.jsonl`` (docs/design.md quotes it).

Usage::

    python benchmarks/bench_structure.py            # print and record
    python benchmarks/bench_structure.py --no-record
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "radardiff"
sys.path.insert(0, str(REPO / "benchmarks"))

LONG = 60
# the acceleration unit: its modules before it was one package, and the package after
UNIT_BEFORE = {"radardiff.models.conv_kernel", "radardiff.models.norm_kernel",
               "radardiff.models.fused_attention", "radardiff.models.selfcheck",
               "radardiff.models.compiled", "radardiff._malloc"}  # fmt: skip
UNIT = "radardiff.accel"
BOUNDARY = "radardiff.models.network"  # the one module that reaches into the unit


def _package(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 else "(top)"


def lines_per_package() -> dict[str, int]:
    out: dict[str, int] = {}
    for path in sorted(SRC.rglob("*")):
        if path.suffix in (".py", ".c", ".h") and path.is_file():
            out[_package(path)] = out.get(_package(path), 0) + len(path.read_text().splitlines())
    return out


def long_functions() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > LONG:
                    found.append(f"{path.relative_to(SRC)}:{node.name} {n}")
    return found


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the radardiff modules it imports (at any depth of the file: lazy imports
    inside functions count, as they tie the modules together all the same)."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    pkg = mod.split(".")[: -node.level or None]
                    base = ".".join([*pkg, node.module])
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                if name in modules and name != mod:
                    graph[mod].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), package faces aside: a
    package's ``__init__`` re-exporting its modules is not a tie between them."""
    faces = {m for m in graph if (SRC.parent / m.replace(".", "/") / "__init__.py").exists()}
    g = {m: {t for t in ts if t not in faces} for m, ts in graph.items() if m not in faces}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _in_unit(mod: str) -> bool:
    return mod in UNIT_BEFORE or mod == UNIT or mod.startswith(UNIT + ".")


def kernel_namers(graph: dict[str, set[str]]) -> list[str]:
    """Modules outside the acceleration unit (and its boundary) that import a module of it."""
    return sorted(
        m for m, targets in graph.items()
        if not _in_unit(m) and m != BOUNDARY and any(_in_unit(t) for t in targets)
    )  # fmt: skip


def measure() -> dict:
    graph = import_graph()
    return {
        "lines_per_package": lines_per_package(),
        "functions_over_60_lines": long_functions(),
        "import_cycles": cycles(graph),
        "files_naming_a_kernel_outside_the_unit": kernel_namers(graph),
        "readme_lines": len((REPO / "README.md").read_text().splitlines()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    m = measure()
    for pkg, n in sorted(m["lines_per_package"].items(), key=lambda kv: -kv[1]):
        print(f"{pkg:12s} {n:6d} lines")
    print(f"functions over {LONG} lines: {len(m['functions_over_60_lines'])}")
    for f in m["functions_over_60_lines"]:
        print(f"  {f}")
    print(f"import cycles: {len(m['import_cycles'])}")
    for c in m["import_cycles"]:
        print(f"  {' <-> '.join(c)}")
    print(
        f"files naming a kernel outside the unit: {len(m['files_naming_a_kernel_outside_the_unit'])}"
    )
    for f in m["files_naming_a_kernel_outside_the_unit"]:
        print(f"  {f}")
    print(f"README lines: {m['readme_lines']}")
    if not args.no_record:
        from _results import record

        summary = {
            **m,
            "count_functions_over_60_lines": len(m["functions_over_60_lines"]),
            "count_import_cycles": len(m["import_cycles"]),
            "count_files_naming_a_kernel": len(m["files_naming_a_kernel_outside_the_unit"]),
        }
        print(f"recorded in {record('structure', summary)}")


if __name__ == "__main__":
    main()
