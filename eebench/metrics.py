"""Task metrics from scikit-learn / scipy, all reported in percent (0-100), as the papers print them."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def _corr(fn, preds, labels) -> float:
    if np.std(preds) == 0 or np.std(labels) == 0:
        return float("nan")  # constant predictions: correlation undefined, report none (stored as null)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(preds, labels)[0])


METRICS = {
    "acc": lambda p, y: accuracy_score(y, p),
    "f1": lambda p, y: f1_score(y, p, zero_division=0),
    "acc_f1_avg": lambda p, y: (accuracy_score(y, p) + f1_score(y, p, zero_division=0)) / 2,
    "mcc": lambda p, y: matthews_corrcoef(y, p),
    "pearson": lambda p, y: _corr(pearsonr, p, y),
    "spearman": lambda p, y: _corr(spearmanr, p, y),
}


def predictions(logits: np.ndarray, regression: bool) -> np.ndarray:
    """logits Shape: [..., C] → class ids (argmax) or regression values (C = 1)."""
    return logits[..., 0] if regression else logits.argmax(-1)


def score(metrics: tuple[str, ...], preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {name: 100.0 * float(METRICS[name](preds, labels)) for name in metrics}


def layerwise(metrics: tuple[str, ...], logits: np.ndarray, labels: np.ndarray,
              regression: bool) -> list[dict[str, float]]:
    """Every exit's metrics as if all examples left there. logits Shape: [N, L, C]."""
    preds = predictions(logits, regression)  # Shape: [N, L]
    return [{"layer": i + 1, **score(metrics, preds[:, i], labels)} for i in range(logits.shape[1])]


def majority_rate(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent label, in percent."""
    return 100.0 * np.bincount(labels.astype(np.int64)).max() / len(labels)


def collapsed(preds: np.ndarray, labels: np.ndarray, share: float = 0.99) -> dict | None:
    """One class predicted for ≥ ``share`` of the examples although the labels are not that
    one-sided: {"class", "share", "label_share"}, else None. preds, labels Shape: [N] (class ids)."""
    counts = np.bincount(preds.astype(np.int64))
    top = int(counts.argmax())
    top_share, label_share = counts[top] / len(preds), float(np.mean(labels == top))
    if top_share >= share and label_share < share:
        return {"class": top, "share": float(top_share), "label_share": label_share}
    return None


def collapse(logits: np.ndarray, labels: np.ndarray, regression: bool, share: float = 0.99) -> list[dict]:
    """Exits whose predictions collapsed: one class (see ``collapsed``) for classification, a constant
    prediction for regression. logits Shape: [N, L, C] → one record per collapsed exit (1-based layer)."""
    preds = predictions(logits, regression)  # Shape: [N, L]
    found = []
    for i in range(preds.shape[1]):
        if regression:
            if np.std(preds[:, i]) < 1e-6 * max(1.0, float(np.std(labels))):
                found.append({"layer": i + 1, "class": None, "share": 1.0, "label_share": None})
        elif (hit := collapsed(preds[:, i], labels, share)) is not None:
            found.append({"layer": i + 1, **hit})
    return found
