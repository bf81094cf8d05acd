"""Seeded percentile bootstrap over the examples of a stored trace, vectorised.

A resample draws n example indices with replacement (``numpy.random.default_rng(seed).integers(0, n,
(B, n))``). Every metric eebench reports is a function of per-resample *counts*, so a resample is
its row of a count matrix W (Shape [B, n], how often each example was drawn) and each metric is a
few matrix products with W: accuracy and time% are weighted means, F1 and MCC come from weighted
confusion counts, Pearson from weighted moments, Spearman from the mid-ranks each resample gives
(the ranks a resample's duplicated examples share), then Pearson on those. The same index draws
fed one by one to scikit-learn / scipy give the same numbers (tests/test_bootstrap.py).

Metrics are in percent, as eebench.metrics reports them. Pure numpy: nothing of eebench above it.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000
SEED = 0


def draws(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The resamples' example indices, Shape [B, n] (what a direct resampling loop iterates over)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n), dtype=np.int64)


def counts(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """How often each example is drawn in each resample, Shape [B, n], float64 (rows sum to n)."""
    index = draws(n, resamples, seed)
    offsets = index + n * np.arange(resamples)[:, None]
    return np.bincount(offsets.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def interval(values: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """Percentile interval over the resamples (axis 0): Shape [2, ...] (low, high); NaN resamples
    (a correlation of a constant resample) are left out."""
    tail = 100 * (1 - level) / 2
    with np.errstate(all="ignore"):
        return np.nanpercentile(values, [tail, 100 - tail], axis=0)


def weighted_mean(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Σ w·x / Σ w per resample; x Shape [n] or [n, K] → [B] or [B, K]."""
    return (w @ x) / w.sum(1).reshape((-1,) + (1,) * (x.ndim - 1))


def _safe_div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def accuracy(w, preds, labels):
    return 100.0 * weighted_mean(w, (preds == labels[:, None] if preds.ndim == 2 else preds == labels).astype(np.float64))


def f1(w, preds, labels):
    """Binary F1 of class 1 (scikit-learn's f1_score, zero_division=0)."""
    y = (labels == 1)[:, None] if preds.ndim == 2 else labels == 1
    p = preds == 1
    tp, fp, fn = w @ (p & y).astype(float), w @ (p & ~y).astype(float), w @ (~p & y).astype(float)
    out = _safe_div(2 * tp, 2 * tp + fp + fn)
    return 100.0 * np.nan_to_num(out, nan=0.0)


def mcc(w, preds, labels):
    """Matthews correlation (scikit-learn's multi-class form) from weighted confusion counts."""
    classes = np.unique(np.concatenate([np.unique(labels), np.unique(preds)]))
    y = labels[:, None] if preds.ndim == 2 else labels
    s = w.sum(1).reshape((-1,) + (1,) * (preds.ndim - 1))
    correct = w @ (preds == y).astype(float)
    t = np.stack([w @ (np.broadcast_to(y, preds.shape) == k).astype(float) for k in classes])
    p = np.stack([w @ (preds == k).astype(float) for k in classes])
    cov_yp = correct * s - (t * p).sum(0)
    cov_pp = s**2 - (p**2).sum(0)
    cov_yy = s**2 - (t**2).sum(0)
    return 100.0 * np.nan_to_num(_safe_div(cov_yp, np.sqrt(cov_pp * cov_yy)), nan=0.0)


def pearson(w, preds, labels):
    """Weighted Pearson correlation; NaN where a resample's predictions or labels are constant."""
    y = labels[:, None] if preds.ndim == 2 else labels
    total = w.sum(1).reshape((-1,) + (1,) * (preds.ndim - 1))
    mx, my = (w @ preds) / total, (w @ np.broadcast_to(y, preds.shape)) / total
    sxy = (w @ (preds * y)) / total - mx * my
    sxx = (w @ preds**2) / total - mx**2
    syy = (w @ np.broadcast_to(y**2, preds.shape)) / total - my**2
    with np.errstate(invalid="ignore"):
        tol = 1e-12 * np.maximum(1.0, np.maximum(np.abs(mx), np.abs(my))) ** 2
        return 100.0 * np.where((sxx > tol) & (syy > tol), sxy / np.sqrt(np.abs(sxx * syy)), np.nan)


def midranks(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each example's mid-rank within each resample (Shape [B, n]): the rank scipy's rankdata gives
    the copies of that example in the resampled array (ties share their mean rank)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # groups of equal values
    group = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
    weight = np.add.reduceat(w[:, order], starts, axis=1)  # Shape [B, G]: draws of each value
    before = np.cumsum(weight, axis=1) - weight
    rank_sorted = (before + (weight + 1) / 2)[:, group]
    ranks = np.empty_like(rank_sorted)
    ranks[:, order] = rank_sorted
    return ranks


def spearman(w, preds, labels):
    if preds.ndim == 2:
        return np.stack([spearman(w, preds[:, k], labels) for k in range(preds.shape[1])], 1)
    rp, ry = midranks(w, preds), midranks(w, labels)
    total = w.sum(1)
    mp, my = (w * rp).sum(1) / total, (w * ry).sum(1) / total
    sxy = (w * rp * ry).sum(1) / total - mp * my
    sxx = (w * rp**2).sum(1) / total - mp**2
    syy = (w * ry**2).sum(1) / total - my**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * np.where((sxx > 1e-12) & (syy > 1e-12), sxy / np.sqrt(sxx * syy), np.nan)


BOOTSTRAP = {
    "acc": accuracy,
    "f1": f1,
    "acc_f1_avg": lambda w, p, y: (accuracy(w, p, y) + f1(w, p, y)) / 2,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
}
"""Metric name (eebench.metrics.METRICS) → its value on every resample, in percent: fn(W, preds, labels)
with preds Shape [n] (→ [B]) or [n, K] (K exits at once → [B, K])."""
