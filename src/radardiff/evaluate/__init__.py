"""Evaluation: pure metrics on arrays, and the drivers that read dataset files and write results.

Pure metrics live in :mod:`radardiff.evaluate.measures` (arrays in, numbers or fixed-shape
dataclasses out, no file I/O). The modules of this package itself are the drivers, which read
files, call the metrics and write results:

- :mod:`.metrics`: one generated set against a real one -> ``metrics.json`` and ``arrays.npz``
  (the schema is documented there);
- :mod:`.study`: samplers and step counts of one run -> ``samplers.json`` / ``samplers.csv``;
- :mod:`.downstream`: the downstream experiment -> ``downstream.json`` / ``downstream.md``;
- :mod:`.likelihood`: bits per dimension of a run on a dataset file;
- :mod:`.extractor`: the radar feature extractor (trained on a dataset file, saved, loaded);
- :mod:`.tasks`: the downstream reference tasks (pairs read from files, networks trained).

``tests/test_layers.py`` names the drivers and checks that no pure metric does file I/O.
"""

from radardiff.evaluate.measures.bands import Band, mean_band
from radardiff.evaluate.measures.distributions import (
    Histograms,
    SampleSpread,
    histograms,
    sample_spread,
    w1,
)
from radardiff.evaluate.measures.features import (
    KIDResult,
    PrecisionRecall,
    fid,
    frechet_distance,
    kid,
    precision_recall,
)
from radardiff.evaluate.measures.radar_stats import (
    PhaseStats,
    SpeckleStats,
    coefficient_of_variation,
    enl,
    phase_stats,
    residues,
    speckle_stats,
    wrap,
)
from radardiff.evaluate.measures.semivariogram import (
    SemivariogramResult,
    bin_edges_px,
    semivariogram,
    semivariogram_rel_error,
)
from radardiff.evaluate.measures.spectra import (
    PSDResult,
    psd_log_rmse,
    radial_frequencies,
    radial_psd,
)
from radardiff.evaluate.metrics import SCHEMA, empty_metrics, evaluate_files

__all__ = [
    "SCHEMA",
    "Band",
    "Histograms",
    "KIDResult",
    "PSDResult",
    "PhaseStats",
    "PrecisionRecall",
    "SampleSpread",
    "SemivariogramResult",
    "SpeckleStats",
    "bin_edges_px",
    "coefficient_of_variation",
    "empty_metrics",
    "enl",
    "evaluate_files",
    "fid",
    "frechet_distance",
    "histograms",
    "kid",
    "mean_band",
    "phase_stats",
    "precision_recall",
    "psd_log_rmse",
    "radial_frequencies",
    "radial_psd",
    "residues",
    "sample_spread",
    "semivariogram",
    "semivariogram_rel_error",
    "speckle_stats",
    "w1",
    "wrap",
]
