"""Sweeping many settings without building a [settings × examples × layers] array.

Every threshold-style policy exits an example at layer e = 1 + #{i < L : not yet exited at i},
where ``key`` is a running minimum (non-increasing along layers) and the example has exited by
layer i once key_i < t (strict policies) or key_i ≤ t. Bucketing every key among the T sorted
thresholds (one searchsorted, one bincount) gives, for all thresholds at once:

  #{n : e_n ≤ i}      = #{n : key_{n,i} has exited at t}              (i < L)
  correct at exit     = correct_L + Σ_i [exited at i] · (correct_i − correct_{i+1})   (telescoping)

Cost O(N·L·log T) instead of O(T·N·L); results equal the direct computation exactly (a test checks)."""

from __future__ import annotations

import numpy as np


def running_min(signal: np.ndarray) -> np.ndarray:
    """Shape [N, L-1] → non-increasing along layers (a loop over layers: faster than
    np.minimum.accumulate along the short axis)."""
    out = np.empty(signal.shape, dtype=np.float64)
    m = signal[:, 0].astype(np.float64)
    out[:, 0] = m
    for i in range(1, signal.shape[1]):
        np.minimum(m, signal[:, i], out=m)
        out[:, i] = m
    return out


def sweep_arrays(key: np.ndarray, thresholds: np.ndarray, strict: bool,
                 correct: np.ndarray | None) -> dict[str, np.ndarray]:
    """key Shape: [N, L-1], non-increasing; thresholds [T]; correct [N, L] (bool) or None.

    Returns mean_exit_layer [T], histogram [T, L] and, with ``correct``, accuracy [T] in percent."""
    n, l1 = key.shape
    t = np.asarray(thresholds, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    ts = t[order]
    # bucket b: the key has exited at sorted threshold j ⇔ j ≥ b
    b = np.searchsorted(ts, key, side="right" if strict else "left")  # Shape: [N, L-1], in 0..T
    width = len(t) + 1
    flat = (b + np.arange(l1)[None, :] * width).ravel()
    exited = np.cumsum(np.bincount(flat, minlength=l1 * width).reshape(l1, width), 1)[:, :-1]  # [L-1, T]
    exited_by = np.empty((len(t), l1 + 1), dtype=np.int64)
    exited_by[order, :l1] = exited.T
    exited_by[:, l1] = n
    hist = np.diff(np.concatenate([np.zeros((len(t), 1), dtype=np.int64), exited_by], 1), axis=1)
    out = {"mean_exit_layer": (hist * np.arange(1, l1 + 2)).sum(1) / n, "histogram": hist}
    if correct is not None:
        c = correct.astype(np.int64)
        diff = (c[:, :-1] - c[:, 1:]).ravel()  # accuracy change when the exit moves from i+1 to i
        gain = np.cumsum(np.bincount(flat, weights=diff, minlength=l1 * width).reshape(l1, width), 1)
        acc = np.empty(len(t))
        acc[order] = c[:, -1].sum() + np.rint(gain[:, :-1].sum(0))
        out["acc"] = 100.0 * acc / n
    return out
