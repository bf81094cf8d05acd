"""Sweeping many settings without building a [settings × examples × layers] array.

Every threshold-style policy exits an example at layer e = 1 + #{i < L : key_i "not yet"}, where
``key`` is a running minimum (non-increasing along layers) and "not yet" means key_i ≥ t (strict
policies: exit once key_i < t) or key_i > t (exit once key_i ≤ t). Sorting each layer's keys once
turns every quantity of a sweep into prefix sums read with ``searchsorted``:

  #{n : e_n ≤ k}      = #{n : key_{n,k} exits at t}                    (k < L)
  correct at exit     = correct_L + Σ_i [exits at i] · (correct_i − correct_{i+1})   (telescoping)

Cost O(L·N log N + L·T log N) instead of O(T·N·L); results equal the direct computation exactly."""

from __future__ import annotations

import numpy as np


def running_min(signal: np.ndarray) -> np.ndarray:
    """Shape [N, L-1] → non-increasing along layers."""
    return np.minimum.accumulate(signal, axis=1)


def sweep_arrays(key: np.ndarray, thresholds: np.ndarray, strict: bool,
                 correct: np.ndarray | None) -> dict[str, np.ndarray]:
    """key Shape: [N, L-1], non-increasing; thresholds [T]; correct [N, L] (bool) or None.

    Returns mean_exit_layer [T], histogram [T, L] and, with ``correct``, accuracy [T] in percent."""
    n, l1 = key.shape
    t = np.asarray(thresholds, dtype=np.float64)
    side = "left" if strict else "right"  # count of keys < t (strict) or ≤ t
    exited_by = np.zeros((len(t), l1 + 1), dtype=np.int64)  # #{e_n ≤ k}, k = 1..L
    acc = None
    if correct is not None:
        c = correct.astype(np.int64)
        acc = np.full(len(t), c[:, -1].sum(), dtype=np.int64)
    integer = np.array_equal(key, np.round(key)) and key.size and key.max() - key.min() < 4096
    for i in range(l1):
        if integer:  # counts (patience, pcee, cka): bucket by value instead of sorting
            lo = int(key.min())
            v = key[:, i].astype(np.int64) - lo
            size = int(v.max()) + 1
            cum = np.concatenate([[0], np.cumsum(np.bincount(v, minlength=size))])
            # number of keys < t (strict) or ≤ t: index into the cumulative counts
            edge = np.ceil(t - lo) if strict else np.floor(t - lo) + 1
            pos = np.clip(edge, 0, size).astype(np.int64)
            counts = cum[pos]
            if correct is not None:
                d = np.bincount(v, weights=c[:, i] - c[:, i + 1], minlength=size)
                acc += np.concatenate([[0], np.cumsum(d)]).astype(np.int64)[pos]
        else:
            order = np.argsort(key[:, i])  # ties need no order: tied keys are counted together
            counts = np.searchsorted(key[order, i], t, side=side)
            if correct is not None:
                delta = np.concatenate([[0], np.cumsum(c[order, i] - c[order, i + 1])])
                acc += delta[counts]
        exited_by[:, i] = counts
    exited_by[:, l1] = n
    hist = np.diff(np.concatenate([np.zeros((len(t), 1), dtype=np.int64), exited_by], 1), axis=1)
    mean_exit = (hist * np.arange(1, l1 + 2)).sum(1) / n
    out = {"mean_exit_layer": mean_exit, "histogram": hist}
    if acc is not None:
        out["acc"] = 100.0 * acc / n
    return out
