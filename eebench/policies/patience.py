"""``patience`` {patience, delta} (PABEE): exit at the first layer whose prediction has equalled the
previous layer's for ``patience`` consecutive layers. Regression: two predictions count as equal when
|ŷ_i − ŷ_{i−1}| < ``delta`` (PABEE's ``--regression_threshold``; its default 0 never counts them
equal, so no example exits early). ``patience = 0`` is PABEE's "no early exit": every example runs
all layers. Classification and regression."""

from __future__ import annotations

import numpy as np

from eebench.policies.base import Policy
from eebench.policies.signals import first_layer_where, predictions_agree, run_lengths
from eebench.maths.fastsweep import running_min

DELTAS = [0.05, 0.1, 0.2, 0.5]
"""The default grid's δ on regression tasks (STS-B labels span 0–5)."""


def _needed(settings) -> np.ndarray:
    """The run length each setting waits for; patience 0 (no early exit) waits forever."""
    return np.asarray([s["patience"] if s["patience"] > 0 else np.inf for s in settings], dtype=np.float64)


def _runs(trace, delta: float) -> np.ndarray:
    return run_lengths(predictions_agree(trace.logits, trace.regression, delta))  # Shape: [N, L]


def _by_delta(trace, settings):
    """(run lengths [N, L], run length each setting needs, setting indices) per δ; classification
    has one group (δ does not apply)."""
    groups: dict[float, list[int]] = {}
    for k, s in enumerate(settings):
        groups.setdefault(float(s["delta"]) if trace.regression else 0.0, []).append(k)
    for delta, idx in groups.items():
        yield _runs(trace, delta), _needed([settings[k] for k in idx]), np.asarray(idx)


def _exits(trace, settings):
    out = np.empty((len(settings), trace.logits.shape[0]), dtype=np.int64)
    for runs, needed, idx in _by_delta(trace, settings):
        out[idx] = first_layer_where(runs[None, :, :-1] >= needed[:, None, None])
    return out


def _fast_keys(trace, settings):
    return [(running_min(-runs[:, :-1].astype(np.float64)), -needed, False, idx)
            for runs, needed, idx in _by_delta(trace, settings)]


def step(setting, view, state):
    pred = view.values[:, 0] if view.regression else view.values.argmax(-1)
    prev = state.get("prev")
    if prev is None:
        same = np.zeros(view.n, dtype=bool)
    elif view.regression:
        same = np.abs(pred - prev) < setting["delta"]
    else:
        same = pred == prev
    state["run"] = np.where(same, state.get("run", 0) + 1, 0)
    state["prev"] = pred
    return state["run"] >= (setting["patience"] if setting["patience"] > 0 else np.inf)


def _grid(n_layers, regression=False):
    if regression:
        return [{"patience": p, "delta": d} for d in DELTAS for p in range(1, n_layers)]
    return [{"patience": p} for p in range(1, n_layers)]


def _candidates(trace, n=200):
    if trace.regression:
        return [{"patience": p, "delta": d} for d in np.round(np.linspace(0.02, 1.0, 50), 3).tolist()
                for p in range(1, trace.num_layers)]
    return _grid(trace.num_layers)


POLICY = Policy(
    "patience", "exit once the prediction has stayed the same for `patience` consecutive layers (PABEE; "
    "regression: within `delta`)", ("patience", "delta"), _grid, _candidates, _exits, step,
    defaults={"delta": 0.0}, fast_keys=_fast_keys,
    ordered=lambda n_layers, n_classes=2, regression=False: [  # long patience exits late (regression: within 0.25)
        {"patience": p, "delta": 0.25 if regression else 0.0} for p in range(n_layers - 1, 0, -1)])
