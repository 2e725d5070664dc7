"""Figure helpers."""

from __future__ import annotations

import numpy as np

from radardiff.report.figures import log_ticks


def test_log_ticks_are_the_1_2_5_values_in_range():
    """A PSD's frequency axis (about one decade) gets plain 1-2-5 ticks, never matplotlib's
    overlapping minor labels."""
    assert log_ticks(np.linspace(1 / 32, 0.5, 16)) == [0.05, 0.1, 0.2, 0.5]
    assert log_ticks([0.1, 10.0]) == [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
    assert log_ticks([0.0, np.nan, -1.0]) == []
