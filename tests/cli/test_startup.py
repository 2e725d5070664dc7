"""A command that builds no network does not pay for torch's and diffusers' imports at its start.

torch (with diffusers and the compiler stack diffusers imports) costs seconds at every start of
``radardiff``: ``--help``, the data commands and the refusals of bad input before any tensor is
made must not import them (``radardiff.models``, ``radardiff.accel`` and ``radardiff._hardware``
load their heavy modules on first use; glibc's malloc is tuned when a network is prepared).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from radardiff.cli.main import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("diffusers", "torch._dynamo", "torch") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def _heavy_modules(argv: list[str]) -> str:
    res = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=120
    )
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line, res.stdout + res.stderr
    return line[0][len("HEAVY=") :]


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["data", "inspect", "/nonexistent/file.h5"],
        ["train", "/nonexistent/recipe.toml", "--out", "/nonexistent/run"],
        ["evaluate", "--real", "/nonexistent/a.h5", "--fake", "/nonexistent/b.h5", "--out", "/x"],
    ],
    ids=["help", "data-inspect", "train-missing-config", "evaluate-missing-file"],
)
def test_commands_without_a_network_do_not_import_torch_or_diffusers(argv):
    assert _heavy_modules(argv) == ""


def test_the_lazy_names_resolve_to_the_modules_own():
    import radardiff.models as models
    from radardiff.models import run, unet

    assert models.load_run is run.load_run
    assert models.build_unet is unet.build_unet
    assert "build_unet" in dir(models)
    with pytest.raises(AttributeError):
        models.no_such_name  # noqa: B018
