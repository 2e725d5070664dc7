"""What keeps an output from being silently wrong: one writer per output (``_files``), stop
requests that no callback can swallow (``_stop``), requests checked against the free disk and a
pace over a day reported (``_budget``)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import weakref

import numpy as np
import pytest

from radardiff import _budget, _stop
from radardiff._files import OutputBusy, hold_output, lock_path
from radardiff.data.dataset_file import DatasetWriter, write_dataset
from radardiff.errors import DataError, DiskFullError, Terminated

HOLD = """
import sys, time
from radardiff._files import hold_output
with hold_output(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_an_output_is_held_once_and_its_lock_file_goes_with_it(tmp_path):
    out = tmp_path / "x.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = rf"x.h5: being written by process {holder.pid} on "
        with pytest.raises(OutputBusy, match=busy), hold_output(out):
            pass
        with pytest.raises(OutputBusy):
            write_dataset(out, np.zeros((2, 1, 4, 4)), kind="generic", units="")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    with hold_output(out):  # the kernel dropped the dead holder's lock
        with hold_output(out):  # re-entrant in one process
            assert lock_path(out).exists()
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_a_dataset_writer_holds_its_output_until_it_is_closed(tmp_path):
    out = tmp_path / "d.h5"
    with DatasetWriter(out, (1, 4, 4), kind="generic", units="") as w:
        w.append(np.ones((2, 1, 4, 4)))
        assert lock_path(out).exists()
    assert out.exists() and not lock_path(out).exists()


def test_a_wholly_non_finite_dataset_is_refused(tmp_path):
    out = tmp_path / "nan.h5"
    with pytest.raises(DataError, match="all 3 images are wholly NaN or infinite"):
        write_dataset(out, np.full((3, 1, 4, 4), np.nan), kind="generic", units="")
    assert not out.exists() and not list(tmp_path.iterdir())
    part = np.full((3, 1, 4, 4), np.nan)
    part[1, 0, 0, 0] = 1.0  # no data in most pixels is normal
    write_dataset(out, part, kind="generic", units="")


@pytest.fixture
def recorded_stop():
    yield
    _stop.reset()


def test_a_stop_swallowed_by_a_callback_is_raised_again(recorded_stop):
    """Python prints and drops an exception raised in a weakref callback: the request stays
    recorded and the next stop point raises it."""

    class Thing:
        pass

    def callback(_):
        _stop._handler(signal.SIGTERM, None)

    thing = Thing()
    ref = weakref.ref(thing, callback)  # noqa: F841 - keeps the callback registered
    hook, sys.unraisablehook = sys.unraisablehook, _stop._unraisable
    try:
        del thing  # the callback raises Terminated, which Python swallows
    finally:
        sys.unraisablehook = hook
    assert _stop.requested() == signal.SIGTERM
    with pytest.raises(Terminated):
        _stop.check()
    with pytest.raises(Terminated):  # every stop point, until the process ends
        _stop.check()


def test_the_cli_ends_a_command_that_swallowed_its_stop_as_a_stop(tmp_path):
    """A command that returns normally after a swallowed SIGINT still exits 130, with one line,
    and a writer does not move its file into place after it."""
    code = f"""
import signal, sys
import numpy as np
from radardiff import _stop
from radardiff.cli import main as m
from radardiff.data.dataset_file import write_dataset

def command(*a, **k):
    try:
        _stop._handler(signal.SIGINT, None)
    except KeyboardInterrupt:
        pass  # swallowed, as inside a weakref callback
    write_dataset({str(tmp_path / "late.h5")!r}, np.ones((1, 1, 4, 4)), kind="generic", units="")

m.cli.commands["report"].callback = command
m.main(["report", "x"])
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 130, res.stderr
    assert res.stderr.strip().splitlines() == ["radardiff: error: interrupted"]
    assert not (tmp_path / "late.h5").exists()


def test_a_request_larger_than_the_free_disk_is_refused(tmp_path):
    free = _budget.free_bytes(tmp_path)
    _budget.check_space(tmp_path / "x.h5", 1000, "a little")
    with pytest.raises(DiskFullError, match=r"x.h5: a lot needs about .* free; ask for less"):
        _budget.check_space(tmp_path / "x.h5", free * 2, "a lot")
    # a path in folders not made yet is judged by the nearest existing one
    _budget.check_space(tmp_path / "a" / "b" / "x.h5", 1000, "a little")


def test_a_pace_over_a_day_is_reported_once(monkeypatch, caplog):
    clock = iter([0.0, 10.0, 20.0, 30.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    pace = _budget.Pace("out.h5", total=1_000_000, min_seconds=5)
    with caplog.at_level(logging.WARNING, logger="radardiff"):
        pace.done(10)  # 10 in 10 s: 11.6 days left
        pace.done(20)
    assert caplog.text.count("at the pace so far") == 1 and "11.6 days" in caplog.text
    clock2 = iter([0.0, 1.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock2))
    fast = _budget.Pace("out.h5", total=1000, min_seconds=0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="radardiff"):
        fast.done(100)
    assert not caplog.text


def test_human_units():
    assert _budget.human_bytes(39e9) == "39.0 GB" and _budget.human_bytes(512) == "512 B"
    assert _budget.human_seconds(90) == "90 s" and _budget.human_seconds(3 * 86400) == "3.0 days"


def test_a_writer_that_fails_to_start_leaves_no_partial_file_nor_hold(tmp_path):
    out = tmp_path / "d.h5"
    with pytest.raises(TypeError):  # h5py cannot store this attribute
        DatasetWriter(out, (1, 4, 4), kind="generic", units="", attrs={"bad": object()})
    assert list(tmp_path.iterdir()) == []
    with hold_output(out):  # not held by the failed writer
        pass
