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
        runs = dict.fromkeys(rows["run"])
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
        width = 0.8 / max(1, len(runs))
        for k, folder in enumerate(runs):
            run = open_run(folder)
            trace = cache.trace(run, column.split)
            if trace is None or trace.labels is None:
                continue
            n = trace.num_layers
            per_layer = [metric_at(trace, np.full(len(trace.ids), i), metric) for i in range(1, n + 1)]
            label = rows[rows["run"] == folder]["method"].iloc[-1]
            ax1.plot(range(1, n + 1), per_layer, label=label, **line_style(k))
            point = rows[(rows["run"] == folder) & (rows["policy"] != "")]
            if not point.empty:
                policy = get_policy(point["policy"].iloc[0])
                layers = policy.exits(trace, [json.loads(point["setting_json"].iloc[0])])[0]
                hist = np.bincount(layers, minlength=n + 1)[1:] / len(layers)
                ax2.bar(np.arange(1, n + 1) + (k - len(runs) / 2 + 0.5) * width, hist, width,
                        label=f"{label} ({point['row_group'].iloc[0]})")
        ax1.set(xlabel="exit layer", ylabel=f"{metric} (%)", title=f"{task}: every exit")
        ax2.set(xlabel="exit layer", ylabel="fraction of examples", title=f"{task}: exit layers")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        paths += save_figure(fig, Path(out_dir) / f"{spec.id}_{task}")
    return paths
