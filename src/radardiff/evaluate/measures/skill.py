"""Skill scores of the downstream reference tasks (pure functions of arrays).

- deformation recovery: RMSE over valid pixels, and the same as a fraction of the signal's RMS;
  skill ``1 - RMSE / RMS(signal)`` (1: perfect, 0: no better than predicting no deformation);
- detection: ROC AUC (Mann-Whitney), and accuracy at a threshold chosen on validation data;
- phase unwrapping: the fraction of valid pixels within pi of the true unwrapped phase and the
  RMSE, both after removing each field's mean from prediction and truth (an unwrapped field is
  known up to a constant); skill = the fraction within pi;
- classification: accuracy, balanced accuracy (the mean of the per-class recalls, so a rare
  class counts as much as a common one), the recalls and the confusion matrix;
- over seeds: mean and standard deviation of each score, and the downstream experiment's
  comparisons of training sets on mean skill.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


@dataclass(frozen=True)
class RecoveryScore:
    """``rmse`` and ``signal_rms`` in the label's units; ``fraction = rmse / signal_rms``."""

    rmse: float
    signal_rms: float
    fraction: float
    skill: float
    n: int


def recovery_score(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> RecoveryScore:
    """Pooled RMSE over valid pixels of a set of fields.

    ``RMSE = sqrt(sum_valid (pred - target)**2 / n_valid)``, ``RMS = sqrt(sum_valid
    target**2 / n_valid)``; both pooled over all pixels of all fields, so a field counts by its
    number of valid pixels.
    """
    v = np.asarray(valid, bool)
    err = (np.asarray(pred, np.float64) - np.asarray(target, np.float64))[v]
    tgt = np.asarray(target, np.float64)[v]
    if err.size == 0:
        raise ValueError("no valid pixels to score")
    rmse = float(np.sqrt(np.mean(err**2)))
    rms = float(np.sqrt(np.mean(tgt**2)))
    frac = rmse / rms if rms > 0 else float("inf")
    return RecoveryScore(rmse, rms, frac, 1.0 - frac, int(len(pred)))


@dataclass(frozen=True)
class UnwrappingScore:
    """``within_pi``: fraction of valid pixels whose error is below pi; ``rmse`` in radians;
    both after each field's mean over its valid pixels is removed from prediction and truth."""

    within_pi: float
    rmse: float
    skill: float
    n: int


def unwrapping_score(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> UnwrappingScore:
    """Scores of unwrapped-phase fields (N, 1, H, W) against the truth, pooled over the valid
    pixels of all fields (a field counts by its number of valid pixels)."""
    v = np.asarray(valid, bool) & np.isfinite(target)
    p = np.where(v, np.asarray(pred, np.float64), 0.0)
    t = np.where(v, np.asarray(target, np.float64), 0.0)
    axes = tuple(range(1, p.ndim))
    count = v.sum(axis=axes, keepdims=True)
    if int(count.sum()) == 0:
        raise ValueError("no valid pixels to score")
    err = (p - t) - (p - t).sum(axis=axes, keepdims=True) / np.maximum(count, 1)
    e = err[v]
    within = float(np.mean(np.abs(e) < np.pi))
    return UnwrappingScore(within, float(np.sqrt(np.mean(e**2))), within, int(len(pred)))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve, ``P(s+ > s-) + P(s+ = s-) / 2`` (Mann-Whitney U / (n+ n-)).

    Computed from mid-ranks (Hanley and McNeil 1982), so ties count a half; needs both classes.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        raise ValueError("ROC AUC needs both classes")
    ranks = rankdata(s)
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold ``t`` (predict 1 where ``score >= t``) of highest accuracy on these data.

    Candidates are midpoints between consecutive distinct scores and the two ends; ties of
    accuracy go to the threshold nearest the middle of the tied range.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    u = np.unique(s)
    cand = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    # accuracy of each candidate from sorted cumulative counts
    order = np.argsort(s, kind="stable")
    ys = y[order]
    below = np.searchsorted(s[order], cand, side="left")  # predicted 0
    neg_below = np.concatenate([[0], np.cumsum(~ys)])[below]
    pos_above = int(y.sum()) - np.concatenate([[0], np.cumsum(ys)])[below]
    acc = (neg_below + pos_above) / y.size
    best = np.flatnonzero(acc == acc.max())
    return float(cand[best[len(best) // 2]])


def accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Fraction of ``(score >= threshold) == label``."""
    y = np.asarray(labels).astype(bool)
    return float(np.mean((np.asarray(scores) >= threshold) == y))


@dataclass(frozen=True)
class DetectionScore:
    """ROC AUC, accuracy at ``threshold``, and the number of present and absent cases."""

    auc: float
    accuracy: float
    threshold: float
    n_present: int
    n_absent: int


def detection_score(scores: np.ndarray, labels: np.ndarray, threshold: float) -> DetectionScore:
    """ROC AUC and accuracy at ``threshold`` (chosen beforehand, on validation data)."""
    y = np.asarray(labels).astype(bool)
    return DetectionScore(
        roc_auc(scores, y), accuracy(scores, y, threshold), float(threshold),
        int(y.sum()), int((~y).sum()),
    )  # fmt: skip


@dataclass(frozen=True)
class ClassificationScore:
    """``confusion[i][j]``: test images of class i predicted as j; ``recall[i]`` its diagonal
    over its row (None for a class without test images, left out of ``balanced_accuracy``)."""

    accuracy: float
    balanced_accuracy: float
    recall: list[float | None]
    confusion: list[list[int]]
    n: int


def classification_score(logits: np.ndarray, labels: np.ndarray) -> ClassificationScore:
    """Scores of class predictions ``argmax(logits)`` (N, K) against ``labels`` (N,) in 0..K-1."""
    logits = np.asarray(logits)
    y = np.asarray(labels).astype(np.int64)
    k = logits.shape[1]
    if y.size == 0:
        raise ValueError("no test images to score")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels outside 0..{k - 1}")
    pred = np.argmax(logits, axis=1)
    conf = np.zeros((k, k), np.int64)
    np.add.at(conf, (y, pred), 1)
    rows = conf.sum(axis=1)
    recall = [float(conf[i, i] / rows[i]) if rows[i] else None for i in range(k)]
    present = [r for r in recall if r is not None]
    return ClassificationScore(
        float(np.mean(pred == y)), float(np.mean(present)), recall, conf.tolist(), int(y.size)
    )


@dataclass(frozen=True)
class SegmentationScore:
    """Per-pixel class predictions against a label map: intersection over union per class
    (None for a class in neither), their mean over the classes of the truth (the skill), pixel
    accuracy, the confusion matrix (truth rows, prediction columns) and the pixels scored."""

    mean_iou: float
    pixel_accuracy: float
    iou: list[float | None]
    confusion: list[list[int]]
    n: int


def segmentation_score(logits: np.ndarray, labels: np.ndarray) -> SegmentationScore:
    r"""Scores of ``argmax(logits)`` (N, K, H, W) against ``labels`` (N, H, W) in 0..K-1, with
    -1 where a pixel has no label (not scored).

    :math:`\mathrm{IoU}_k = |P_k \cap T_k| / |P_k \cup T_k|` (Jaccard index, Everingham et al.
    2010, PASCAL VOC); the mean runs over the classes present in the truth, so that a class the
    test maps lack neither helps nor hurts.
    """
    logits = np.asarray(logits)
    y = np.asarray(labels).astype(np.int64)
    k = logits.shape[1]
    keep = y >= 0
    if not keep.any():
        raise ValueError("no labelled pixels to score")
    if y.max() >= k:
        raise ValueError(f"labels outside 0..{k - 1}")
    pred = np.argmax(logits, axis=1)[keep]
    truth = y[keep]
    conf = np.bincount(truth * k + pred, minlength=k * k).reshape(k, k)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(axis=0) + conf.sum(axis=1) - inter
    iou = [float(inter[c] / union[c]) if union[c] else None for c in range(k)]
    present = [iou[c] for c in range(k) if conf[c].sum() > 0]
    return SegmentationScore(
        float(np.mean(present)), float(inter.sum() / truth.size), iou, conf.tolist(),
        int(truth.size),
    )  # fmt: skip


# the skill of a network that learned nothing: no better than predicting no deformation, or a
# coin for detection
CHANCE = {"recovery": 0.0, "detection": 0.5}  # classification: 1 / the number of classes


def summarise_over_seeds(rows: list[dict], chance: dict | None = None) -> dict:
    """Per task and training set, each score's mean and standard deviation over seeds, and the
    comparisons of :func:`skill_criteria` on the mean skill.

    Parameters
    ----------
    rows : list of dict
        One per (task, set, seed): ``task``, ``set`` and the float scores (``skill`` among them;
        ``threshold`` is a setting, not a score).
    chance : dict, optional
        The chance skill of tasks not in :data:`CHANCE` (classification: 1 / classes).

    Returns
    -------
    dict
        ``{task: {"sets": {set: {score: {"mean", "std"}, "seeds": n}}, "criteria": {...}}}``,
        ``std`` with ``ddof=1`` (0 for one seed).
    """
    out: dict = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        sets = {}
        for name in dict.fromkeys(r["set"] for r in rows if r["task"] == task):
            mine = [r for r in rows if r["task"] == task and r["set"] == name]
            keys = [k for k, v in mine[0].items() if isinstance(v, float) and k != "threshold"]
            sets[name] = {k: _spread([r[k] for r in mine]) for k in keys}
            sets[name]["seeds"] = len(mine)
        skill = {name: s["skill"]["mean"] for name, s in sets.items()}
        out[task] = {
            "sets": sets,
            "criteria": skill_criteria(skill, {**CHANCE, **(chance or {})}.get(task, 0.0)),
        }
    return out


def _spread(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def skill_criteria(skill: dict, chance: float = 0.0) -> dict:
    """The downstream experiment's comparisons of mean skills per training set.

    ``generated_over_real = s_gen / s_real`` (when ``s_real`` > chance); where chance is not 0
    (detection: an AUC ratio flatters a poor network, ``c`` = 0.5; classification: ``c`` = 1 /
    classes), also ``(s_gen - c) / (s_real - c)``, and that ratio decides ``generated_reaches_90pct_of_real`` (>= 0.9).
    ``generated_beats_physics`` and ``real_plus_generated_beats_real`` compare means directly.
    Only the comparisons whose sets are present are returned.
    """
    c: dict = {}
    if "generated" in skill and "real" in skill and skill["real"] > chance:
        c["generated_over_real"] = skill["generated"] / skill["real"]
        if chance:
            c["generated_over_real_above_chance"] = (skill["generated"] - chance) / (
                skill["real"] - chance
            )
        key = "generated_over_real_above_chance" if chance else "generated_over_real"
        c["generated_reaches_90pct_of_real"] = bool(c[key] >= 0.9)
    if "generated" in skill and "physics" in skill:
        c["generated_beats_physics"] = bool(skill["generated"] > skill["physics"])
    if "real+generated" in skill and "real" in skill:
        c["real_plus_generated_beats_real"] = bool(skill["real+generated"] > skill["real"])
    return c
