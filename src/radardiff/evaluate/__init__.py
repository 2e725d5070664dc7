"""Evaluation: pure radar metric functions and the driver that writes ``metrics.json``.

The metric modules (semivariogram, spectra, distributions, radar_stats, features, bands) are pure
NumPy/SciPy functions on arrays; :mod:`radardiff.evaluate.metrics` reads dataset files and writes
the fixed-schema ``metrics.json`` documented there.
"""

from radardiff.evaluate.bands import Band, mean_band
from radardiff.evaluate.distributions import Histograms, SampleSpread, histograms, sample_spread, w1
from radardiff.evaluate.features import (
    KIDResult,
    PrecisionRecall,
    fid,
    frechet_distance,
    kid,
    precision_recall,
)
from radardiff.evaluate.metrics import SCHEMA, empty_metrics, evaluate_files
from radardiff.evaluate.radar_stats import (
    PhaseStats,
    SpeckleStats,
    coefficient_of_variation,
    enl,
    phase_stats,
    residues,
    speckle_stats,
    wrap,
)
from radardiff.evaluate.semivariogram import (
    SemivariogramResult,
    bin_edges_px,
    semivariogram,
    semivariogram_rel_error,
)
from radardiff.evaluate.spectra import PSDResult, psd_log_rmse, radial_frequencies, radial_psd

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
