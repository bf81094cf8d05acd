"""``lte`` {threshold} (BERxiT / BERTer): exit at the first layer i < L whose learned-to-exit
certainty u_i = σ(LTE head(pooled_i)) is at least the threshold (needs a model with an LTE head);
a list of L-1 numbers is a per-layer threshold. Classification and regression."""

from __future__ import annotations

import numpy as np
import torch

from eebench.policies.base import (Policy, fast_threshold, layer_threshold, signal_candidates, signal_threshold_exits,
                                   threshold_grid)


def _signal(trace):
    return trace.lte.astype(np.float64)


def step(setting, view, state):
    u = torch.sigmoid(view.model.lte(view.pooled)).squeeze(-1).float().cpu().numpy().astype(np.float64)
    return u >= layer_threshold(setting, view.i)


POLICY = Policy(
    "lte", "exit at the first layer whose learned certainty is at least the threshold", ("threshold",),
    threshold_grid([1.01, 0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]), signal_candidates(_signal),
    signal_threshold_exits(_signal, below=False), step, needs="lte", fast_keys=fast_threshold(_signal, below=False),
    ordered=lambda n_layers, n_classes=2, regression=False: [  # certainty >= threshold: 1.0 first, down to 0
        {"threshold": round(float(t), 6)} for t in np.linspace(1.0, 0.0, 401)])
