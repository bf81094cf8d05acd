"""``entropy`` {threshold} (DeeBERT): exit at the first layer i < L whose prediction entropy H_i
(nats) is below the threshold; a list of L-1 numbers is a per-layer threshold. Classification only."""

from __future__ import annotations

import numpy as np

from eebench.policies.base import (CLASSIFICATION, Policy, fast_threshold, layer_threshold, signal_candidates,
                                   signal_threshold_exits, threshold_grid)
from eebench.policies.signals import entropy, row_signal

# DeeBERT's entropy grid (castorini/DeeBERT scripts/eval_entropy.sh).
DEEBERT_ENTROPY_GRID = [0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


def _signal(trace):
    return entropy(trace.logits)


def row_step(setting, i, values):
    return row_signal("entropy", values) < layer_threshold(setting, i)


def step(setting, view, state):
    t = layer_threshold(setting, view.i)
    if view.n == 1:  # one row: Python floats beat numpy's per-call cost
        return np.array([row_step(setting, view.i, view.logits[0].tolist())])
    return entropy(view.values) < t


POLICY = Policy(
    "entropy", "exit at the first layer whose prediction entropy (nats) is below the threshold", ("threshold",),
    threshold_grid(DEEBERT_ENTROPY_GRID), signal_candidates(_signal), signal_threshold_exits(_signal, below=True),
    step, tasks=(CLASSIFICATION,), fast_keys=fast_threshold(_signal, below=True), row_step=row_step,
    # a low threshold exits late: 0 first, then up to the largest entropy log(C), 400 steps
    ordered=lambda n_layers, n_classes=2, regression=False: [
        {"threshold": round(float(t), 6)} for t in np.linspace(0.0, np.log(max(n_classes, 2)), 401)])
