"""The per-layer signals every policy shares (offline over a trace's [N, L] arrays, online over the
rows still running): entropy, max probability, argmax, runs of agreement, first qualifying layer."""

from __future__ import annotations

import math

import numpy as np

from eebench.errors import UserError


def _classes(logits: np.ndarray) -> list[np.ndarray]:
    """The class slices of [..., C] as float64 arrays: numpy reduces a short last axis slowly, so the
    functions below loop over the (few) classes instead."""
    return [np.ascontiguousarray(logits[..., c], dtype=np.float64) for c in range(logits.shape[-1])]


def _own_classes(logits: np.ndarray) -> list[np.ndarray]:
    """Like _classes, always copies: the callers work in place."""
    return [np.array(logits[..., c], dtype=np.float64) for c in range(logits.shape[-1])]


def _max(parts: list[np.ndarray]) -> np.ndarray:
    m = parts[0].copy()
    for p in parts[1:]:
        np.maximum(m, p, out=m)
    return m


def argmax(logits: np.ndarray) -> np.ndarray:
    """Same as logits.argmax(-1) (first maximum wins), faster for few classes."""
    parts = [logits[..., c] for c in range(logits.shape[-1])]
    best, idx = parts[0].copy(), np.zeros(parts[0].shape, dtype=np.int64)
    for c, p in enumerate(parts[1:], start=1):
        better = p > best
        best = np.where(better, p, best)
        idx[better] = c
    return idx


def entropy(logits: np.ndarray) -> np.ndarray:
    """Prediction entropy in nats, H = −Σ p log p from a stable log-softmax. [..., C] → [...]."""
    parts = _own_classes(logits)
    m = _max(parts)
    z, acc, e = np.zeros_like(m), np.zeros_like(m), np.empty_like(m)
    for x in parts:  # in place: a trace's [N, L] arrays are large, temporaries cost more than the math
        x -= m
        np.exp(x, out=e)
        z += e
        e *= x
        acc += e
    # −Σ p (x − log z) with p = e^x / z
    acc /= z
    np.log(z, out=z)
    z -= acc
    return z


def max_prob(logits: np.ndarray) -> np.ndarray:
    """Largest class probability, exp(max x − logsumexp x). [..., C] → [...]."""
    parts = _own_classes(logits)
    m = _max(parts)
    z = np.zeros_like(m)
    for x in parts:
        x -= m
        z += np.exp(x, out=x)
    return np.divide(1.0, z, out=z)


def first_layer_where(ok: np.ndarray) -> np.ndarray:
    """ok Shape: [..., N, L-1] (may layer i exit?) → exit layer, 1-based; L where none may."""
    n_layers = ok.shape[-1] + 1
    return np.where(ok.any(-1), ok.argmax(-1) + 1, n_layers)


def threshold_exits(signal: np.ndarray, thresholds, below: bool) -> np.ndarray:
    """signal Shape: [N, L]; thresholds: [T] or [T, L-1] (per layer) → exit layers Shape: [T, N]."""
    n_layers = signal.shape[1]
    rows = []
    for t in thresholds:
        t = np.asarray(t, dtype=np.float64)
        if t.ndim == 1 and t.shape[0] != n_layers - 1:
            raise UserError(f"a per-layer threshold needs {n_layers - 1} values (layers 1..L-1), "
                            f"got {t.shape[0]}")
        rows.append(np.broadcast_to(t, (n_layers - 1,)))
    t = np.stack(rows)[:, None, :]  # Shape: [T, 1, L-1]
    s = signal[None, :, :-1]
    return first_layer_where(s < t if below else s >= t)


def run_lengths(same: np.ndarray) -> np.ndarray:
    """same Shape: [..., L] (layer i agrees with / qualifies after layer i−1) → length of the current
    run of consecutive Trues ending at each layer."""
    out = np.zeros(same.shape, dtype=np.int64)
    run = np.zeros(same.shape[:-1], dtype=np.int64)
    for i in range(same.shape[-1]):
        run = np.where(same[..., i], run + 1, 0)
        out[..., i] = run
    return out


def predictions_agree(logits: np.ndarray, regression: bool, delta: float) -> np.ndarray:
    """[N, L]: layer i's prediction equals layer i−1's (False at layer 1)."""
    if regression:
        values = logits[..., 0]
        agree = np.abs(np.diff(values, axis=1)) < delta
    else:
        preds = argmax(logits)
        agree = preds[:, 1:] == preds[:, :-1]
    return np.concatenate([np.zeros((logits.shape[0], 1), dtype=bool), agree], axis=1)


def row_signal(kind: str, values: list[float]) -> float:
    """Entropy or max probability of one row of logits in Python floats (the engine at batch size 1,
    where numpy's per-call cost dominates): the formulas above (stable log-softmax, float64)."""
    m = max(values)
    shifted = [v - m for v in values]
    exps = [math.exp(v) for v in shifted]
    z = sum(exps)
    if kind == "max_prob":
        return 1.0 / z
    return math.log(z) - sum(e * x for e, x in zip(exps, shifted)) / z


def midpoints(values: np.ndarray, n: int) -> list[float]:
    """Thresholds between quantiles of a signal: never equal to an observed value (no ties)."""
    u = np.unique(values)
    i = np.unique(np.searchsorted(u, np.quantile(values, np.linspace(0, 1, n)), side="right"))
    i = i[(i >= 1) & (i < len(u))]
    mids = (u[i - 1] + u[i]) / 2  # strictly between two neighbouring observed values
    return sorted(set(mids.tolist())) + [float(u[-1]) + 1.0, float(u[0]) - 1.0]
