"""``pcee`` {patience, threshold}: patient and confident — exit at the first layer that ends a run of
``patience`` consecutive layers each with max probability ≥ threshold. Classification only."""

from __future__ import annotations

import numpy as np

from eebench.policies.base import CLASSIFICATION, Policy, fast_grouped
from eebench.policies.signals import first_layer_where, max_prob, run_lengths


def _exits(trace, settings):
    conf = max_prob(trace.logits)  # Shape: [N, L]
    out = []
    for s in settings:
        runs = run_lengths(conf >= s["threshold"])
        out.append(first_layer_where(runs[:, :-1] >= s["patience"]))
    return np.stack(out)


def step(setting, view, state):
    ok = max_prob(view.values) >= setting["threshold"]
    state["run"] = np.where(ok, state.get("run", 0) + 1, 0)
    return state["run"] >= setting["patience"]


POLICY = Policy(
    "pcee", "exit once `patience` consecutive layers are each confident (max probability ≥ threshold)",
    ("patience", "threshold"),
    lambda n_layers, regression=False: [{"patience": p, "threshold": t} for p in (1, 2, 3)
                                        for t in (0.99, 0.95, 0.9, 0.8, 0.7)],
    lambda trace, n=200: [{"patience": p, "threshold": t} for p in range(1, min(4, trace.num_layers))
                          for t in np.linspace(0.5, 1.0, 51).round(3).tolist()],
    _exits, step, tasks=(CLASSIFICATION,),
    # at PCEE's patience 2: a high threshold exits late, 1.0 first, down to 1/C
    ordered=lambda n_layers, n_classes=2, regression=False: [
        {"patience": 2, "threshold": round(float(t), 6)} for t in np.linspace(1.0, 1.0 / max(n_classes, 2), 401)],
    fast_keys=fast_grouped(lambda t, th: run_lengths(max_prob(t.logits) >= th), "threshold", "patience"))
