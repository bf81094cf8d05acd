"""Two runs on the same examples, compared pairwise: the paired bootstrap difference of the metric at a
matched time% (and of time% at a matched metric), its interval and a p-value. Both runs are resampled
with the same draws of the split's examples, so what the two runs share (easy and hard examples) cancels
and only their disagreement is left; "not separable" when the 95% interval of B − A covers 0."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eebench.errors import UserError
from eebench.maths.bootstrap import BOOTSTRAP, SEED, counts, interval, weighted_mean
from eebench.metrics import predictions


def aligned_traces(run_a, run_b, split: str):
    """Both runs' traces of ``split``, B's rows in A's order; an error unless they hold the same examples."""
    from eebench.trace_data import load_trace

    traces = []
    for run in (run_a, run_b):
        path = run.trace_path(split)
        if not path.is_file():
            raise UserError(f"{run.dir} has no {split} trace ({path} missing); run eebench evaluate {run.dir} "
                            f"--split {split}")
        traces.append(load_trace(path))
    a, b = traces
    if a.labels is None or b.labels is None:
        raise UserError(f"split {split!r} has no labels: a paired comparison of metrics needs a labelled split")
    ids_a, ids_b = [str(i) for i in a.ids], [str(i) for i in b.ids]
    if sorted(ids_a) != sorted(ids_b):
        raise UserError(f"{run_a.dir} and {run_b.dir} traced different {split} examples ({len(ids_a)} and "
                        f"{len(ids_b)}, {len(set(ids_a) & set(ids_b))} shared): a paired comparison needs the "
                        f"same examples")
    order = {i: k for k, i in enumerate(ids_b)}
    take = np.array([order[i] for i in ids_a])
    if not np.array_equal(np.asarray(b.labels)[take], np.asarray(a.labels)):
        raise UserError(f"{run_a.dir} and {run_b.dir} give the same {split} examples different labels; "
                        f"a paired comparison needs the same data")
    return a, b, take


def _chosen_exits(run, trace, policy, metric: str, time_pct: float | None = None, at_metric: float | None = None):
    """The exits of the setting with the best metric at time% ≤ time_pct, or the least time% reaching at_metric."""
    from eebench.calibration import choose, row_setting, sweep

    settings = policy.default_grid(trace.num_layers, trace.regression) + policy.fine_grid(trace)
    table = sweep(trace, run.spec, policy, settings)
    row = choose(table, metric, float(table[metric].max()), target_time_pct=time_pct,
                 max_drop=None if at_metric is None else float(table[metric].max()) - at_metric)
    return policy.exits(trace, [policy.complete(row_setting(row, policy))])[0]


def paired_comparison(run_a, run_b, split: str, policy_name: str, time_pct: float, at_metric: float | None,
                      resamples: int = 1000) -> pd.DataFrame:
    """Rows: the metric at time% ≤ ``time_pct``, and time% at metric ≥ ``at_metric`` (default: the lower
    of the two runs' metrics at that time%); columns: A, B, B − A, its interval, p-value, verdict."""
    from eebench.policies import get_policy

    a, b, take = aligned_traces(run_a, run_b, split)
    metric = run_a.spec.primary_metric
    policy = get_policy(policy_name)
    labels = np.asarray(a.labels)
    w = counts(len(labels), resamples, SEED)

    def metric_of(trace, exits, rows=None):
        logits = trace.logits if rows is None else trace.logits[rows]
        preds = predictions(logits[np.arange(len(exits)), exits - 1], trace.regression)
        return BOOTSTRAP[metric](w, preds, labels), BOOTSTRAP[metric](np.ones((1, len(labels))), preds, labels)[0]

    exits_a = _chosen_exits(run_a, a, policy, metric, time_pct=time_pct)
    exits_b = _chosen_exits(run_b, b, policy, metric, time_pct=time_pct)[take]  # in A's order
    (boot_a, obs_a), (boot_b, obs_b) = metric_of(a, exits_a), metric_of(b, exits_b, take)
    rows = [_row(f"{metric} at time% ≤ {time_pct:g}", obs_a, obs_b, boot_b - boot_a)]
    target = min(obs_a, obs_b) if at_metric is None else at_metric
    try:
        ta = _chosen_exits(run_a, a, policy, metric, at_metric=target)
        tb = _chosen_exits(run_b, b, policy, metric, at_metric=target)[take]
    except UserError:
        rows.append({"comparison": f"time% at {metric} ≥ {target:.2f}", "note": "a run never reaches it"})
    else:
        time_a = 100.0 * weighted_mean(w, ta.astype(float)) / a.num_layers
        time_b = 100.0 * weighted_mean(w, tb.astype(float)) / b.num_layers
        rows.append(_row(f"time% at {metric} ≥ {target:.2f}", 100.0 * ta.mean() / a.num_layers,
                         100.0 * tb.mean() / b.num_layers, time_b - time_a))
    return pd.DataFrame(rows)


def _row(what: str, a: float, b: float, diff: np.ndarray) -> dict:
    low, high = interval(diff)
    p = float(min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0))))
    separable = not (low <= 0 <= high)
    return {"comparison": what, "A": a, "B": b, "B - A": b - a, "low": float(low), "high": float(high),
            "p": p, "verdict": "separable" if separable else "not separable", "note": ""}
