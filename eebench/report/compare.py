"""Runs side by side: the layer-wise metric of every exit, one column per run (from stored results)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from eebench.errors import UserError
from eebench.report.render import save_figure, write_table


def compare_runs(runs, out_dir: Path, split: str = "dev") -> tuple[pd.DataFrame, list[Path]]:
    columns, metric, task = {}, None, None
    for run in runs:
        path = run.eval_dir(split) / "layerwise.json"
        if not path.is_file():
            raise UserError(f"{run.dir} has no {split} results ({path} missing); run eebench evaluate "
                            f"{run.dir} --split {split}")
        if task is not None and run.spec.name != task:
            raise UserError(f"{run.dir} is task {run.spec.name}, the others {task}; compare runs of one task")
        task, metric = run.spec.name, run.spec.primary_metric
        label = run.recipe.train.strategy
        if label in columns:
            label = run.dir.name
        columns[label] = [row[metric] for row in run.layerwise(split)]
    frame = pd.DataFrame(columns)
    frame.insert(0, "layer", range(1, len(frame) + 1))
    stem = Path(out_dir) / f"compare_{task}_{split}"
    paths = write_table(frame, stem, f"{task} {split} {metric} of every exit, by training strategy", digits=1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name in columns:
        ax.plot(frame["layer"], frame[name], marker="o", label=name)
    ax.set_xlabel("exit layer")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{task} {split}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    paths += save_figure(fig, stem)
    return frame, paths
