"""Sweeps and operating points: every setting of a policy applied to a stored trace, and the one a
calibration chooses (array operations over a trace, no model runs; the pure maths underneath is in
eebench.maths)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from eebench.data.tasks import TaskSpec
from eebench.errors import UserError
from eebench.maths.fastsweep import sweep_arrays
from eebench.metrics import predictions, score
from eebench.policies import Policy, argmax
from eebench.maths.timing import time_and_speedup
from eebench.trace_data import Trace


def to_settings(policy: Policy, grid) -> list[dict]:
    """Recipe / CLI grids: a dict is a setting; a number (or per-layer list) sets the policy's one parameter."""
    keys = [k for k in policy.params if k not in policy.defaults]
    settings = []
    for item in grid:
        if isinstance(item, dict):
            unknown = set(item) - set(policy.params)
            if unknown:
                raise UserError(f"policy {policy.name!r} has no parameter {', '.join(sorted(unknown))}; "
                                f"its parameters: {', '.join(policy.params)}")
            settings.append(dict(item))
        elif len(keys) == 1:
            settings.append({keys[0]: item})
        else:
            raise UserError(f"policy {policy.name!r} takes settings with {', '.join(keys)}; give the grid "
                            f"as tables, e.g. exit.grid = [{{ {keys[0]} = 1, {keys[1]} = 0.9 }}]")
    return settings


def exit_predictions(trace: Trace, exit_layers: np.ndarray) -> np.ndarray:
    """The prediction each example makes at its exit layer. exit_layers Shape: [N] (1-based)."""
    at_exit = trace.logits[np.arange(len(exit_layers)), exit_layers - 1]  # Shape: [N, C]
    return predictions(at_exit, trace.regression)


def sweep(trace: Trace, spec: TaskSpec, policy: Policy, settings: list[dict]) -> pd.DataFrame:
    """One row per setting: the setting, metrics (when labelled), mean exit layer, time%, speed-up,
    histogram. Uses eebench.maths.fastsweep when the policy and metrics allow (same numbers, faster)."""
    policy.check(trace)
    full = [policy.complete(s) for s in settings]  # optional parameters filled in
    n_layers = trace.num_layers
    fast_metrics = trace.labels is None or (not trace.regression and tuple(spec.metrics) == ("acc",))
    groups = policy.fast_keys(trace, full) if policy.fast_keys and fast_metrics else None
    metrics: dict[str, np.ndarray] = {}
    if groups is not None:
        correct = argmax(trace.logits) == trace.labels[:, None] if trace.labels is not None else None
        mean = np.zeros(len(settings))
        hist = np.zeros((len(settings), n_layers), dtype=np.int64)
        acc = np.zeros(len(settings))
        for key, thresholds, strict, idx in groups:
            arrays = sweep_arrays(key, thresholds, strict, correct)
            mean[idx], hist[idx] = arrays["mean_exit_layer"], arrays["histogram"]
            if correct is not None:
                acc[idx] = arrays["acc"]
        if correct is not None:
            metrics["acc"] = acc
    else:
        exits = policy.exits(trace, full)  # Shape: [T, N]
        mean = exits.mean(1)
        offsets = (exits - 1) + n_layers * np.arange(len(settings))[:, None]
        hist = np.bincount(offsets.ravel(), minlength=len(settings) * n_layers).reshape(len(settings), n_layers)
        if trace.labels is not None and fast_metrics:  # accuracy of every setting in one gather
            correct = (argmax(trace.logits) == trace.labels[:, None]).ravel()  # [N, L] flattened
            metrics["acc"] = 100.0 * np.take(correct, exits + (np.arange(exits.shape[1]) * n_layers - 1)).mean(1)
        elif trace.labels is not None:
            scores = [score(spec.metrics, exit_predictions(trace, e), trace.labels) for e in exits]
            metrics = {m: np.array([s[m] for s in scores]) for m in spec.metrics}
    # every parameter of every setting, completed: a grid mixing {patience} with {patience, delta}
    # keeps delta, so the row chosen is the setting saved (and applied again)
    keys = [k for k in policy.params if any(k in s for s in full)]
    columns = {k: [json.dumps(s[k]) if isinstance(s[k], list) else s[k] for s in full] for k in keys}
    columns.update(metrics)
    columns.update(mean_exit_layer=mean, **time_and_speedup(mean, n_layers),
                   histogram=[json.dumps(h) for h in hist.tolist()])
    return pd.DataFrame(columns)  # built from columns at once: ~5x faster than column by column


def row_setting(row: pd.Series, policy: Policy) -> dict:
    keys = [k for k in policy.params if k in row.index]
    return {k: json.loads(row[k]) if isinstance(row[k], str) else _plain(row[k]) for k in keys}


def _plain(v):
    return int(v) if float(v).is_integer() and not isinstance(v, float) else float(v)


def per_example(trace: Trace, exit_layers: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"id": trace.ids, "exit_layer": exit_layers,
                          "prediction": exit_predictions(trace, exit_layers)})
    if trace.labels is not None:
        frame["label"] = trace.labels
        if not trace.regression:
            frame["correct"] = (frame["prediction"] == frame["label"]).astype(int)
    return frame


def choose(table: pd.DataFrame, metric: str, final_metric: float, target_time_pct: float | None = None,
           max_drop: float | None = None) -> pd.Series:
    """The operating point meeting the target.

    target_time_pct: the best metric among settings with time% ≤ target (ties: less time).
    max_drop: the least time% among settings whose metric ≥ last-exit metric − max_drop."""
    if target_time_pct is not None:
        ok = table[table["time_pct"] <= target_time_pct + 1e-9]
        if ok.empty:
            lowest = table["time_pct"].min()
            floor = 100 / len(json.loads(table["histogram"].iloc[0])) if "histogram" in table else None
            fix = (f"nothing goes below {floor:.1f} (every example at exit 1 of {round(100 / floor)}); raise "
                   f"--target-time-pct" if floor is not None and target_time_pct < floor - 1e-9
                   else "raise --target-time-pct or widen the grid (--grid / exit.grid)")
            raise UserError(f"no setting reaches time% ≤ {target_time_pct:g} (lowest: {lowest:.1f}); {fix}")
        return ok.sort_values([metric, "time_pct"], ascending=[False, True]).iloc[0]
    if max_drop is not None:
        ok = table[table[metric] >= final_metric - max_drop - 1e-9]
        if ok.empty:
            raise UserError(f"no setting keeps {metric} within {max_drop:g} of the last exit "
                            f"({final_metric:.2f}); raise --max-drop")
        return ok.sort_values(["time_pct", metric], ascending=[True, False]).iloc[0]
    raise UserError("give a target: --target-time-pct X or --max-drop X (or exit.target_time_pct / exit.max_drop)")
