"""Threshold sweeps and operating points: array operations over a trace, no model runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from eebench.data.tasks import TaskSpec
from eebench.errors import UserError
from eebench.metrics import predictions, score
from eebench.policies import Policy, exit_summary
from eebench.trace import Trace


def exit_predictions(trace: Trace, exit_layers: np.ndarray) -> np.ndarray:
    """The prediction each example makes at its exit layer. exit_layers Shape: [N] (1-based)."""
    at_exit = trace.logits[np.arange(len(exit_layers)), exit_layers - 1]  # Shape: [N, C]
    return predictions(at_exit, trace.regression)


def sweep(trace: Trace, spec: TaskSpec, policy: Policy, thresholds) -> pd.DataFrame:
    """One row per threshold: metrics (when labelled), time%, speed-up, mean exit layer, histogram."""
    thresholds = np.asarray(sorted(set(float(t) for t in thresholds)), dtype=np.float64)
    exits = policy.exits(trace.logits, thresholds)  # Shape: [T, N]
    rows = []
    for t, layers in zip(thresholds, exits):
        summary = exit_summary(layers, trace.num_layers)
        row = {"threshold": float(t)}
        if trace.labels is not None:
            row.update(score(spec.metrics, exit_predictions(trace, layers), trace.labels))
        row.update(summary, histogram=json.dumps(summary["histogram"]))
        rows.append(row)
    return pd.DataFrame(rows)


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

    target_time_pct: the best metric among thresholds with time% ≤ target (ties: less time).
    max_drop: the least time% among thresholds whose metric ≥ last-exit metric − max_drop."""
    if target_time_pct is not None:
        ok = table[table["time_pct"] <= target_time_pct + 1e-9]
        if ok.empty:
            raise UserError(f"no threshold reaches time% ≤ {target_time_pct:g} (lowest: "
                            f"{table['time_pct'].min():.1f}); raise --target-time-pct or widen exit.grid")
        return ok.sort_values([metric, "time_pct"], ascending=[False, True]).iloc[0]
    if max_drop is not None:
        ok = table[table[metric] >= final_metric - max_drop - 1e-9]
        if ok.empty:
            raise UserError(f"no threshold keeps {metric} within {max_drop:g} of the last exit "
                            f"({final_metric:.2f}); raise --max-drop")
        return ok.sort_values(["time_pct", metric], ascending=[True, False]).iloc[0]
    raise UserError("give a target: --target-time-pct X or --max-drop X (or exit.target_time_pct / exit.max_drop)")
