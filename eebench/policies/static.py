"""``static`` {layer}: every example exits at ``layer`` (a truncated model)."""

from __future__ import annotations

import numpy as np

from eebench.policies.base import Policy


def _exits(trace, settings):
    n = trace.logits.shape[0]
    return np.stack([np.full(n, min(int(s["layer"]), trace.num_layers)) for s in settings])


def step(setting, view, state):
    return np.full(view.n, view.i >= int(setting["layer"]))


POLICY = Policy(
    "static", "every example exits at `layer`", ("layer",),
    lambda n_layers, regression=False: [{"layer": k} for k in range(1, n_layers + 1)],
    lambda trace, n=200: [{"layer": k} for k in range(1, trace.num_layers + 1)], _exits, step,
    first_layer=lambda setting, n_layers: min(int(setting["layer"]), n_layers),
    ordered=lambda n_layers, n_classes=2, regression=False: [{"layer": k} for k in range(n_layers, 0, -1)])
