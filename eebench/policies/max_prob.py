"""``max_prob`` {threshold}: exit at the first layer i < L whose largest class probability is at
least the threshold; a list of L-1 numbers is a per-layer threshold. Classification only."""

from __future__ import annotations

import numpy as np

from eebench.policies.base import (CLASSIFICATION, Policy, fast_threshold, layer_threshold, signal_candidates,
                                   signal_threshold_exits, threshold_grid)
from eebench.policies.signals import max_prob, row_signal


def _signal(trace):
    return max_prob(trace.logits)


def row_step(setting, i, values):
    return row_signal("max_prob", values) >= layer_threshold(setting, i)


def step(setting, view, state):
    t = layer_threshold(setting, view.i)
    if view.n == 1:
        return np.array([row_step(setting, view.i, view.logits[0].tolist())])
    return max_prob(view.values) >= t


POLICY = Policy(
    "max_prob", "exit at the first layer whose largest class probability is at least the threshold", ("threshold",),
    threshold_grid([1.01, 0.99, 0.98, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]),
    signal_candidates(_signal), signal_threshold_exits(_signal, below=False), step, tasks=(CLASSIFICATION,),
    fast_keys=fast_threshold(_signal, below=False), row_step=row_step,
    # a high threshold exits late: 1.0 first, down to 1/C, 400 steps
    ordered=lambda n_layers, n_classes=2, regression=False: [
        {"threshold": round(float(t), 6)} for t in np.linspace(1.0, 1.0 / max(n_classes, 2), 401)])
