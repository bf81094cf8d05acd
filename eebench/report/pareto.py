"""Across policies: metric-vs-time% curves, their area, and the Pareto front — from a stored trace."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eebench.calibration import sweep
from eebench.policies import POLICIES, setting_label


def policy_curves(trace, spec) -> pd.DataFrame:
    """Every eligible policy's sweep (its fine grid) on one labelled trace, one row per setting."""
    frames = []
    for policy in POLICIES.values():
        if policy.needs and getattr(trace, policy.needs, None) is None or not policy.serves(trace.regression):
            continue
        settings = policy.fine_grid(trace)
        table = sweep(trace, spec, policy, settings)
        frames.append(pd.DataFrame({"policy": policy.name, "setting": [setting_label(s) for s in settings],
                                    "metric": table[spec.primary_metric], "time_pct": table["time_pct"]}))
    return pd.concat(frames, ignore_index=True)


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Points no other point beats: none has time% ≤ and metric ≥ with one of them strict."""
    p = points.sort_values(["time_pct", "metric"], ascending=[True, False])
    keep, best = [], -np.inf
    for idx, row in p.iterrows():
        if row["metric"] > best:
            keep.append(idx)
            best = row["metric"]
    return p.loc[keep]


def area_under_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Per policy: the mean metric over time% ∈ [t_lo, 100] of its own Pareto front (a step function
    read at each time%: the best metric reachable within that budget), with t_lo the largest of the
    policies' smallest time% so every policy covers the range. Also the best metric at ≤ 50% time."""
    fronts = {name: pareto_front(group) for name, group in curves.groupby("policy")}
    t_lo = max(f["time_pct"].min() for f in fronts.values())
    grid = np.linspace(t_lo, 100.0, 401)
    rows = []
    for name, f in fronts.items():
        t, m = f["time_pct"].to_numpy(), f["metric"].to_numpy()
        reach = np.array([m[t <= x + 1e-9].max() for x in grid])
        half = m[t <= 50 + 1e-9]
        rows.append({"policy": name, "auc_mean_metric": float(np.trapezoid(reach, grid) / (100.0 - t_lo))
                     if t_lo < 100 else float(reach[-1]),
                     "from_time_pct": t_lo, "best_metric_at_50pct_time": float(half.max()) if len(half) else np.nan})
    return pd.DataFrame(rows).sort_values("auc_mean_metric", ascending=False)
