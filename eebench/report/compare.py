"""Runs side by side (stored results only): the layer-wise metric of every exit, one column per
setting, seeds of one recipe pooled as mean ± std; optionally the metric an exit policy reaches at a
time budget and the time it needs for a metric (each run's dense sweep over its own trace)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eebench.errors import UserError
from eebench.report.render import line_style, save_figure, write_table
from eebench.seeds import fmt, group_runs


def _layerwise(run, split: str, metric: str) -> list[float]:
    path = run.eval_dir(split) / "layerwise.json"
    if not path.is_file():
        raise UserError(f"{run.dir} has no {split} results ({path} missing); run eebench evaluate "
                        f"{run.dir} --split {split}")
    return [row[metric] for row in run.layerwise(split)]


def policy_sweep(run, split: str, policy_name: str) -> pd.DataFrame:
    """The policy's dense sweep over the run's stored trace of ``split`` (metric, time% per setting)."""
    from eebench.calibration import sweep
    from eebench.policies import get_policy
    from eebench.trace_data import load_trace

    path = run.trace_path(split)
    if not path.is_file():
        raise UserError(f"{run.dir} has no {split} trace ({path} missing); run eebench evaluate "
                        f"{run.dir} --split {split}")
    trace = load_trace(path)
    policy = get_policy(policy_name)
    return sweep(trace, run.spec, policy, policy.fine_grid(trace))


def metric_at_time(table: pd.DataFrame, metric: str, time_pct: float) -> float:
    """The best metric among settings with time% ≤ time_pct (NaN when none is that fast)."""
    ok = table[table["time_pct"] <= time_pct + 1e-9]
    return float(ok[metric].max()) if len(ok) else float("nan")


def time_at_metric(table: pd.DataFrame, metric: str, value: float) -> float:
    """The least time% among settings whose metric ≥ value (NaN when none reaches it)."""
    ok = table[table[metric] >= value - 1e-9]
    return float(ok["time_pct"].min()) if len(ok) else float("nan")


def compare_runs(runs, out_dir: Path, split: str = "dev", policies: tuple[str, ...] = (),
                 time_pct: tuple[float, ...] = (), at_metric: tuple[float, ...] = ()) -> tuple[pd.DataFrame, list[Path]]:
    """One column per setting (runs differing only in train.seed pooled: mean ± std over seeds).
    Rows: each exit's metric, the mean of the early exits (1..L-1), then per policy the metric at
    each time% budget and the time% each metric needs."""
    runs = list({run.dir.resolve(): run for run in runs}.values())  # a folder given twice counts once
    if not runs:
        raise UserError("no runs given; e.g. eebench compare results/cmp_sst2_*")
    tasks = {run.spec.name for run in runs}
    if len(tasks) > 1:
        raise UserError(f"the runs are of tasks {', '.join(sorted(tasks))}; compare runs of one task")
    task, metric = runs[0].spec.name, runs[0].spec.primary_metric
    groups = group_runs(runs)
    values: dict[str, dict[str, list[float]]] = {}
    for label, members in groups.items():
        per_run = [_layerwise(run, split, metric) for run in members]
        n_layers = len(per_run[0])
        col = {f"exit {i + 1}": [r[i] for r in per_run] for i in range(n_layers)}
        col["early exits (mean)"] = [float(np.mean(r[:-1])) for r in per_run]
        for name in policies:
            sweeps = [policy_sweep(run, split, name) for run in members]
            for t in time_pct:
                col[f"{name}: {metric} at time% ≤ {t:g}"] = [metric_at_time(s, metric, t) for s in sweeps]
            for m in at_metric:
                col[f"{name}: time% for {metric} ≥ {m:g}"] = [time_at_metric(s, metric, m) for s in sweeps]
        values[_header(label, len(members))] = col
    rows = list(dict.fromkeys(r for col in values.values() for r in col))
    frame = pd.DataFrame({"row": rows, **{h: [fmt(col.get(r, [])) for r in rows] for h, col in values.items()}})
    stem = Path(out_dir) / f"compare_{task}_{split}"
    n_seeds = sorted({len(m) for m in groups.values()})
    caption = (f"{task} {split} {metric} of every exit by setting"
               + (f", mean ± std over {'/'.join(map(str, n_seeds))} seeds" if max(n_seeds) > 1 else ""))
    paths = write_table(frame, stem, caption, digits=1)
    paths += _figure(values, stem, task, split, metric)
    return frame, paths


def _header(label: str, n: int) -> str:
    return label if n == 1 else f"{label} (n={n})"


def _figure(values: dict, stem: Path, task: str, split: str, metric: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for i, (name, col) in enumerate(values.items()):
        layers = [k for k in col if k.startswith("exit ")]
        x = np.arange(1, len(layers) + 1)
        mean = np.array([np.mean(col[k]) for k in layers])
        std = np.array([np.std(col[k], ddof=1) if len(col[k]) > 1 else 0.0 for k in layers])
        style = line_style(i)
        ax.plot(x, mean, label=name, **style)
        if std.any():
            ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=style["color"])
    ax.set_xlabel("exit layer")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{task} {split}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, stem)


def paired_section(runs, out_dir: Path, split: str, policies, time_pct, at_metric,
                   resamples: int) -> tuple[pd.DataFrame, list[Path]]:
    """Runs A and B compared pairwise on ``split`` (eebench.report.paired): the first --policy (default A's
    recipe policy), the first --time-pct (default A's calibrated operating point on the split, else 50)."""
    from eebench.report.paired import paired_comparison

    a, b = runs
    policy = policies[0] if policies else a.recipe.exit.policy
    if time_pct:
        budget = time_pct[0]
    else:
        points = [p for p in a.operating_points(split) if p.policy == policy]
        budget = round(points[0].time_pct, 2) if points else 50.0
    frame = paired_comparison(a, b, split, policy, budget, at_metric[0] if at_metric else None, resamples)
    frame.insert(1, "policy", policy)
    stem = Path(out_dir) / f"paired_{a.spec.name}_{split}"
    caption = (f"{a.spec.name} {split}: B = {b.dir.name} against A = {a.dir.name} on the same examples; "
               f"paired bootstrap over examples ({resamples:,} resamples, seed 0), [low, high] the 95% interval "
               f"of B − A, p two-sided; not separable when it covers 0")
    return frame, write_table(frame, stem, caption, digits=2)


def compare_command(folders: list[Path], split: str, out: Path, policies: list[str], time_pct: list[float],
                    at_metric: list[float], bootstrap: int | None) -> None:
    """`eebench compare`: the side-by-side table, with two runs the paired comparison, and a warning
    for every way the runs' provenance differs."""
    from eebench.console import console
    from eebench.provenance import differences
    from eebench.report.render import markdown
    from eebench.run.folder import open_run, run_status

    if (time_pct or at_metric) and not policies and len(folders) != 2:
        raise UserError("--time-pct / --at-metric need an exit policy to sweep: add --policy entropy (or another)")
    runs = [open_run(f) for f in folders]
    frame, paths = compare_runs(runs, out, split, tuple(policies), tuple(time_pct), tuple(at_metric))
    print(markdown(frame, 1))
    if len(runs) == 2:
        pair, written = paired_section(runs, out, split, policies, time_pct, at_metric,
                                       1000 if bootstrap is None else bootstrap)
        print(markdown(pair, 2))
        paths += written
    for line in differences({r.name: run_status(r.owner_dir).provenance for r in runs}):
        console.print(f"[yellow]warning:[/] compared runs differ: {line}", highlight=False, soft_wrap=True)
    console.print(f"wrote {', '.join(str(p) for p in paths)}")
