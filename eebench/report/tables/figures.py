"""Figures across a table's methods: every exit's metric and the exit-layer histogram per column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from eebench.policies import get_policy
from eebench.report.tables.measure import MeasuredCache, metric_at
from eebench.report.tables.spec import TableSpec

def table_figures(spec: TableSpec, frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Across methods, per task column: layer-wise metric of every exit, and the exit-layer histogram
    at the measured operating point (RomeBERT Fig. 2-6, MetaBERT Fig. 2). Only measured cells."""
    from eebench.report.render import line_style, save_figure
    from eebench.run.folder import open_run

    measured = frame[frame["ours"].notna() & (frame["run"] != "") & frame["task"].isin(spec.columns)]
    if measured.empty:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cache = MeasuredCache()
    paths = []
    for task, rows in measured.groupby("task", sort=False):
        column = spec.columns[task]
        metric = rows["metric"].iloc[0]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
        for k, folder in enumerate(dict.fromkeys(rows["run"])):  # every exit's metric: one line per run
            trace = cache.trace(open_run(folder), column.split)
            if trace is None or trace.labels is None:
                continue
            n = trace.num_layers
            per_layer = [metric_at(trace, np.full(len(trace.ids), i), metric) for i in range(1, n + 1)]
            ax1.plot(range(1, n + 1), per_layer, label=rows[rows["run"] == folder]["method"].iloc[-1], **line_style(k))
        bars = exit_histograms(rows, cache, column.split)
        width = 0.8 / max(1, len(bars))
        for k, (label, hist) in enumerate(bars):  # the exit layers: one set of bars per measured row
            ax2.bar(np.arange(1, len(hist) + 1) + (k - len(bars) / 2 + 0.5) * width, hist, width, label=label)
        ax1.set(xlabel="exit layer", ylabel=f"{metric} (%)", title=f"{task}: every exit")
        ax2.set(xlabel="exit layer", ylabel="fraction of examples", title=f"{task}: exit layers")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        paths += save_figure(fig, Path(out_dir) / f"{spec.id}_{task}")
    return paths


def exit_histograms(rows: pd.DataFrame, cache: MeasuredCache, split: str) -> list[tuple[str, np.ndarray]]:
    """Every measured row's exit-layer histogram at its own operating point, labelled by the row (one
    run can fill several rows: the full-model row and the dynamic row of the same run each get theirs)."""
    from eebench.run.folder import open_run

    out = []
    for _, row in rows[rows["policy"] != ""].iterrows():
        trace = cache.trace(open_run(row["run"]), split)
        if trace is None:
            continue
        layers = get_policy(row["policy"]).exits(trace, [json.loads(row["setting_json"])])[0]
        out.append((f"{row['method']} ({row['row_group']})",
                    np.bincount(layers, minlength=trace.num_layers + 1)[1:] / len(layers)))
    return out
