"""How sure each number is: seeded percentile bootstrap intervals over a stored trace's examples
(eebench.maths.bootstrap), for an operating point's metrics and time% and for every exit's metrics.

Convention everywhere (records, reports, paper tables): a 95% percentile interval ``[low, high]``
from 1,000 resamples of the split's examples (``output.bootstrap`` / ``--bootstrap N``; 0 turns it
off), seed 0, so the same trace always gives the same interval. It says how much the number would move
on another draw of a split of this size from the same distribution; it does not cover seeds (a
different fine-tuning run), which `eebench compare` pools separately."""

from __future__ import annotations

import numpy as np

from eebench.maths.bootstrap import BOOTSTRAP, LEVEL, SEED, counts, interval, weighted_mean
from eebench.metrics import predictions


def described(resamples: int) -> dict:
    """What the intervals stored beside a number are (kept in the record)."""
    return {"resamples": resamples, "seed": SEED, "level": LEVEL, "kind": "percentile bootstrap over examples"}


def point_intervals(trace, layers: np.ndarray, metrics: tuple[str, ...], resamples: int) -> dict[str, list[float]]:
    """Intervals of time% and of each metric (when labelled) at these exits, Shape-free: name → [low, high]."""
    if resamples <= 0 or not len(layers):
        return {}
    w = counts(len(layers), resamples, SEED)
    out = {"time_pct": _pair(interval(100.0 * weighted_mean(w, layers.astype(np.float64)) / trace.num_layers))}
    if trace.labels is not None:
        at_exit = trace.logits[np.arange(len(layers)), layers - 1]
        preds = predictions(at_exit, trace.regression)
        for m in metrics:
            out[m] = _pair(interval(BOOTSTRAP[m](w, preds, trace.labels)))
    return out


def layerwise_intervals(trace, metrics: tuple[str, ...], resamples: int) -> list[dict[str, float]]:
    """For each exit (all examples leaving there): ``<metric>_lo`` and ``<metric>_hi``."""
    if resamples <= 0 or trace.labels is None:
        return [{} for _ in range(trace.num_layers)]
    w = counts(len(trace.labels), resamples, SEED)
    preds = predictions(trace.logits, trace.regression)  # Shape: [N, L]
    rows: list[dict[str, float]] = [{} for _ in range(trace.num_layers)]
    for m in metrics:
        low, high = interval(BOOTSTRAP[m](w, preds, trace.labels))  # Shape: [L] each
        for i in range(trace.num_layers):
            rows[i].update({f"{m}_lo": _num(low[i]), f"{m}_hi": _num(high[i])})
    return rows


def _num(x) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 4)


def _pair(values) -> list[float | None]:
    return [_num(values[0]), _num(values[1])]


def shown(value, low, high, digits: int = 1) -> str:
    """``84.9 [83.7, 86.1]``: the number and its interval, as every report prints them."""
    if value is None or value != value:
        return "none"
    if low is None or high is None or low != low or high != high:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def caption(resamples: int = 1000) -> str:
    return (f"[low, high]: 95% percentile bootstrap interval over the split's examples ({resamples:,} resamples, "
            f"seed {SEED}; not over fine-tuning seeds)")
