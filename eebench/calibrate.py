"""Sweeps and operating points: array operations over a trace, no model runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from eebench.data.tasks import TaskSpec
from eebench.errors import UserError
from eebench.metrics import predictions, score
from eebench.policies import Policy, exit_summary
from eebench.trace import Trace


def to_settings(policy: Policy, grid) -> list[dict]:
    """Recipe / CLI grids: a dict is a setting; a number (or per-layer list) sets the policy's one parameter."""
    keys = list(policy.default_grid(2)[0])
    settings = []
    for item in grid:
        if isinstance(item, dict):
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
    """One row per setting: the setting, metrics (when labelled), time%, speed-up, mean exit layer,
    histogram. Accuracy is a gather over a precomputed correctness matrix; other metrics use sklearn."""
    exits = policy.exits(trace, settings)  # Shape: [T, N]
    n = exits.shape[1]
    fast_acc = trace.labels is not None and not trace.regression
    if fast_acc:
        correct = trace.logits.argmax(-1) == trace.labels[:, None]  # Shape: [N, L]
        accs = 100.0 * correct[np.arange(n)[None, :], exits - 1].mean(1)
    rows = []
    for k, (setting, layers) in enumerate(zip(settings, exits)):
        summary = exit_summary(layers, trace.num_layers)
        row = {key: json.dumps(v) if isinstance(v, list) else v for key, v in setting.items()}
        if trace.labels is not None:
            others = tuple(m for m in spec.metrics if not (fast_acc and m == "acc"))
            if others:
                row.update(score(others, exit_predictions(trace, layers), trace.labels))
            if fast_acc and "acc" in spec.metrics:
                row["acc"] = float(accs[k])
        row.update(summary, histogram=json.dumps(summary["histogram"]))
        rows.append(row)
    frame = pd.DataFrame(rows)
    order = list(settings[0]) + [m for m in spec.metrics if m in frame] + \
        ["mean_exit_layer", "time_pct", "speedup", "histogram"]
    return frame[order]


def row_setting(row: pd.Series, policy: Policy) -> dict:
    keys = list(policy.default_grid(2)[0])
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
            raise UserError(f"no setting reaches time% ≤ {target_time_pct:g} (lowest: "
                            f"{table['time_pct'].min():.1f}); raise --target-time-pct or widen exit.grid")
        return ok.sort_values([metric, "time_pct"], ascending=[False, True]).iloc[0]
    if max_drop is not None:
        ok = table[table[metric] >= final_metric - max_drop - 1e-9]
        if ok.empty:
            raise UserError(f"no setting keeps {metric} within {max_drop:g} of the last exit "
                            f"({final_metric:.2f}); raise --max-drop")
        return ok.sort_values(["time_pct", metric], ascending=[True, False]).iloc[0]
    raise UserError("give a target: --target-time-pct X or --max-drop X (or exit.target_time_pct / exit.max_drop)")
