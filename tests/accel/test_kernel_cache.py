"""The compiled-kernel cache is verified, not trusted: a damaged library is rebuilt (never loaded:
a truncated one killed every default run with SIGBUS), a compiler that writes nothing poisons
nothing, a failed build is not retried at every call, one process builds while the others wait,
and ``auto`` falls back to torch's path with one notice whatever the cache holds.

A stand-in compiler copies the library built by the real one (so no test compiles for seconds)
and logs each call; the damaged caches are loaded in child processes, so that a crash could not
take the test run with it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from radardiff.accel import library as klib
from radardiff.accel import policy as kpolicy

OK, WHY = klib.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"the kernels cannot run here: {WHY}")

FAKE_CC = """#!{python}
import os, shutil, sys, time
if "--version" in sys.argv:
    print("fakecc 1.0")
    sys.exit(0)
with open(os.environ["FAKECC_LOG"], "a") as fh:
    fh.write("build\\n")
time.sleep(float(os.environ.get("FAKECC_SLEEP", "0")))
mode = os.environ.get("FAKECC_MODE", "copy")
if mode == "copy":
    shutil.copyfile(os.environ["FAKECC_SOURCE"], sys.argv[sys.argv.index("-o") + 1])
sys.exit(0)  # mode "nothing": exit 0 having written nothing, as CC=/bin/true does
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache, the stand-in compiler as $CC, and the environment for child processes."""
    cc = tmp_path / "fakecc"
    cc.write_text(FAKE_CC.format(python=sys.executable))
    cc.chmod(cc.stat().st_mode | stat.S_IEXEC)
    env = {
        "RADARDIFF_CACHE": str(tmp_path / "cache"),
        "CC": str(cc),
        "FAKECC_LOG": str(tmp_path / "cc.log"),
        "FAKECC_SOURCE": klib.library()._name,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    klib.library.cache_clear()
    yield tmp_path
    klib.library.cache_clear()


def builds(tmp: Path) -> int:
    log = tmp / "cc.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def child(*extra_env: tuple[str, str]) -> subprocess.CompletedProcess:
    """``available()`` in a fresh process: prints (ok, why) as JSON."""
    env = {**os.environ, **dict(extra_env)}
    code = (
        "import json; from radardiff.accel import library; print(json.dumps(library.available()))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def library_file(tmp: Path) -> Path:
    (lib,) = (tmp / "cache").glob("conv-*.so")
    return lib


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other bytes"])
def test_a_damaged_cached_library_is_rebuilt_never_loaded(cache, damage):
    # built in a child: a library this process had loaded must not be damaged under it (its
    # pages are mapped from the file: that is the SIGBUS this guards against)
    assert json.loads(child().stdout) == [True, "AVX2 kernels"]
    assert builds(cache) == 1
    lib = library_file(cache)
    data = lib.read_bytes()
    if damage == "truncated":
        lib.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        lib.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        lib.write_bytes(b"")
    elif damage == "no marker":
        lib.with_suffix(".json").unlink()
    else:  # a whole, loadable library that is not the one built (same size)
        lib.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    res = child()
    assert res.returncode == 0, res.stderr  # no SIGBUS (exit -7) from a truncated library
    assert json.loads(res.stdout) == [True, "AVX2 kernels"]
    assert builds(cache) == 2
    assert lib.read_bytes() == data  # rebuilt whole


def test_a_compiler_that_writes_nothing_poisons_nothing_and_is_asked_once(cache, monkeypatch):
    monkeypatch.setenv("FAKECC_MODE", "nothing")
    ok, why = klib.available()
    assert not ok and why.endswith("groupnorm.c: it wrote an empty file (exit status 0)"), why
    assert builds(cache) == 2  # with and without OpenMP
    assert sorted(os.listdir(cache / "cache")) == []  # no library, marker or lock left
    assert klib.available() == (False, why)  # remembered, not built again
    assert builds(cache) == 2
    use, reason = kpolicy.choose("auto", "cpu", True, False)
    assert not use and reason == f"train.conv_kernels = auto; {why}"
    monkeypatch.setenv("FAKECC_MODE", "copy")  # a later process with a working compiler
    assert json.loads(child().stdout) == [True, "AVX2 kernels"]


def test_one_process_builds_while_the_others_wait(cache):
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import json; from radardiff.accel import library; "
                "print(json.dumps(library.available()))",
            ],
            env={**os.environ, "FAKECC_SLEEP": "1.5"},
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(3)
    ]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert outs == [[True, "AVX2 kernels"]] * 3
    assert builds(cache) == 1
    assert sorted(p.suffix for p in (cache / "cache").iterdir()) == [".json", ".so"]


def test_auto_falls_back_with_one_notice_where_the_cache_cannot_be_written(cache, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    res = child(("RADARDIFF_CACHE", str(blocker / "cache")))
    ok, why = json.loads(res.stdout)
    assert not ok and why.startswith(f"cannot write to the cache {blocker / 'cache'}")
