"""Measure a table: one tidy frame, a row per paper number with ours beside it where the run exists
(seeds pooled as mean ± std), read from stored traces (no model runs). A cell's caveats are
structured flags (``flags``: comma-separated keys of FLAGS) with a human note beside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from eebench.calibration import choose, exit_predictions, row_setting, sweep
from eebench.errors import UserError
from eebench.intervals import point_intervals
from eebench.maths.bootstrap import RESAMPLES
from eebench.metrics import METRICS, collapsed, majority_rate
from eebench.policies import get_policy, setting_label
from eebench.report.paper import reference_numbers
from eebench.report.tables.spec import SETS, Column, Rule, TableSpec, finished, run_folder, seed_folders
from eebench.seeds import mean_std
from eebench.maths.timing import time_and_speedup

FLAGS = {
    "no_recipe": "no recipe in the chosen sets",
    "not_run": "the recipe has no finished run",
    "unmeasurable": "the run cannot give this cell (trace, labels, metric or policy missing)",
    "unlabelled": "unlabelled split: metric from --scores",
    "from_scores": "metric from the score file",
    "collapsed": "predictions collapsed to one class",
    "target_not_reached": "the rule's target was not reached: best point shown",
    "base_not_measured": "base row not measured: drop taken from the run's own last exit",
    "paper_inconsistent": "the paper's derived value does not follow from its components",
    "paper_outside_interval": "the paper's number lies outside our 95% interval",
    "at_majority_rate": "our 95% interval covers the majority-class rate: not separable from always predicting it",
}


def _flag(cell: dict, key: str, note: str | None = None) -> dict:
    cell.setdefault("flags", [])
    if key not in cell["flags"]:
        cell["flags"].append(key)
    text = note or FLAGS[key]
    cell["note"] = (cell.get("note", "") + "; " if cell.get("note") else "") + text
    return cell


def has_flag(frame: pd.DataFrame, key: str) -> pd.Series:
    return frame["flags"].fillna("").str.split(",").map(lambda f: key in f)


def _find_runs(spec: TableSpec, method: str, column: str, sets: tuple[str, ...]):
    """The finished runs (by set order) that fill this cell — the recipe's seeded runs when there are
    any, else its own run: ([runs], set name) or ([], reason)."""
    from eebench.run.folder import open_run

    reason = "no_recipe"
    for set_name in sets:
        path = spec.recipe_path(set_name, method, column)
        if path is None or not path.is_file():
            continue
        folder = run_folder(path, spec.columns[column].task)
        done = [f for f in seed_folders(folder) if finished(f.parent.parent if f.parent.name == "tasks" else f)]
        if not done and finished(folder):
            done = [folder]
        if not done:
            reason = "not_run"
            continue
        return [open_run(f) for f in done], set_name
    return [], reason


class MeasuredCache:
    """Per-run caches: a trace and its policy sweeps are loaded once per table."""

    def __init__(self):
        self.traces: dict = {}
        self.sweeps: dict = {}

    def trace(self, run, split: str):
        from eebench.trace_data import load_trace

        key = (str(run.dir), split)
        if key not in self.traces:
            path = run.trace_path(split)
            self.traces[key] = load_trace(path) if path.is_file() else None
        return self.traces[key]

    def sweep(self, run, trace, policy):
        key = (str(run.dir), trace.split, policy.name)
        if key not in self.sweeps:
            spec = run.spec
            settings = policy.default_grid(trace.num_layers, trace.regression) + policy.fine_grid(trace)
            self.sweeps[key] = sweep(trace, spec, policy, settings)
        return self.sweeps[key]


def metric_at(trace, layers: np.ndarray, metric: str) -> float:
    return 100.0 * float(METRICS[metric](exit_predictions(trace, layers), trace.labels))


def _measure_cell(cache: MeasuredCache, run, column: Column, metric: str, rule: Rule, paper: dict,
                  base_value: float | None) -> dict:
    """One cell from one run. ``paper``: the paper's printed ``value`` (in our units) and ``time_pct``."""
    paper_time = paper.get("time_pct")
    target = cache.trace(run, column.split)
    if target is None:
        return _flag({}, "unmeasurable", f"no {column.split} trace in {run.dir} (eebench evaluate {run.dir} "
                                         f"--split {column.split})")
    trace = cache.trace(run, column.calibrate_split or column.split)
    if trace is None or trace.labels is None:
        return _flag({}, "unmeasurable", f"no labelled {column.calibrate_split or column.split} trace in {run.dir}")
    if metric not in METRICS:
        return _flag({}, "unmeasurable", f"metric {metric} is not computed by eebench")
    n = trace.num_layers
    if rule.value == "last_exit":
        layers = np.full(len(target.ids), n)
        return _point(target, layers, metric, {"setting": "last exit", "policy": "static",
                                                "setting_json": json.dumps({"layer": n})})
    policy = get_policy(rule.policy)
    if policy.needs and getattr(trace, policy.needs) is None:
        return _flag({}, "unmeasurable", f"policy {policy.name} needs {policy.needs} scores the run did not record")
    if not policy.serves(trace.regression):
        return _flag({}, "unmeasurable", f"policy {policy.name} does not apply to a regression task")
    flags = []
    if rule.setting is not None:
        setting = dict(rule.setting)
    else:
        table = cache.sweep(run, trace, policy).copy()
        if metric not in table:
            table[metric] = [metric_at(trace, layers, metric)
                             for layers in policy.exits(trace, [row_setting(r, policy) for _, r in table.iterrows()])]
        if rule.match_paper and paper_time is None:
            return _flag({}, "unmeasurable", "the paper prints no time% / speed-up for this cell")
        for key, value in rule.fix.items():
            table = table[np.isclose(table[key].astype(float), float(value))] if key in table else table.iloc[:0]
        if table.empty:
            return _flag({}, "unmeasurable", f"the {policy.name} sweep has no setting with {setting_label(rule.fix)}")
        best = _pick(table, metric, rule, paper, lambda: metric_at(trace, np.full(len(trace.ids), n), metric),
                     base_value, flags)
        setting = row_setting(best, policy)
    layers = policy.exits(target, [setting])[0]
    cell = _point(target, layers, metric, {"setting": f"{policy.name} {setting_label(setting)}",
                                           "policy": policy.name, "setting_json": json.dumps(setting)})
    for key in flags:
        _flag(cell, key)
    return cell


def _pick(table: pd.DataFrame, metric: str, rule: Rule, paper: dict, last_exit, base_value: float | None,
          flags: list) -> pd.Series:
    """The sweep row a rule picks (unreached targets are added to ``flags``); ``last_exit()`` gives the
    run's own last-exit metric."""
    if rule.match_paper_metric:  # least time% whose metric reaches the paper's printed one
        best = _choose(table, metric, final=paper["value"], max_drop=0.0)
        if best[metric] < paper["value"] - 1e-9:
            flags.append("target_not_reached")
        return best
    if rule.match_paper or rule.at_time_pct is not None:  # the paper's operating point: the nearest time%
        gap = (table["time_pct"] - (paper["time_pct"] if rule.match_paper else rule.at_time_pct)).abs()
        return table.assign(gap=gap).sort_values(["gap", metric], ascending=[True, False]).iloc[0]
    if rule.target_time_pct is not None:
        return _choose(table, metric, target_time_pct=rule.target_time_pct)
    reference = last_exit()
    if rule.relative_to == "base":
        if base_value is None:
            flags.append("base_not_measured")
        else:
            reference = base_value
    best = _choose(table, metric, final=reference, max_drop=rule.max_drop or 0.0)
    if best[metric] < reference - (rule.max_drop or 0.0) - 1e-9:
        flags.append("target_not_reached")
    return best


def _point(trace, layers: np.ndarray, metric: str, fields: dict) -> dict:
    """time% and speed-up at these exits; the metric where the split has labels."""
    timing = time_and_speedup(float(layers.mean()), trace.num_layers)
    out = {"ours_time_pct": timing["time_pct"], "ours_speedup": timing["speedup"], **fields}
    if trace.labels is not None:
        out["ours"] = metric_at(trace, layers, metric)
        low, high = point_intervals(trace, layers, (metric,), RESAMPLES)[metric]
        out.update(ours_lo=low, ours_hi=high)
        if metric == "acc" and not trace.regression and low is not None and low <= majority_rate(trace.labels) <= high:
            _flag(out, "at_majority_rate", f"{FLAGS['at_majority_rate']} ({majority_rate(trace.labels):.1f})")
        if not trace.regression and collapsed(exit_predictions(trace, layers), trace.labels):
            _flag(out, "collapsed")
    else:
        _flag(out, "unlabelled")
    return out


def _choose(table: pd.DataFrame, metric: str, final: float = 0.0, max_drop: float | None = None,
            target_time_pct: float | None = None) -> pd.Series:
    try:
        return choose(table, metric, final, target_time_pct, max_drop)
    except UserError:  # unreachable target: the closest point, flagged by the caller
        if target_time_pct is not None:
            return table.sort_values(["time_pct", metric], ascending=[True, False]).iloc[0]
        return table.sort_values([metric, "time_pct"], ascending=[False, True]).iloc[0]


def measure(spec: TableSpec, sets: tuple[str, ...] = SETS, scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """The tidy frame: one row per paper number (plus derived columns recomputed), ours beside it.

    ``scores`` (row_group, method, task, value) fills cells of unlabelled splits, e.g. the GLUE
    server's test scores for the submission files eebench wrote."""
    ref = reference_numbers()
    ref = ref[ref["table"] == spec.id].reset_index(drop=True)
    if ref.empty:
        raise UserError(f"table {spec.id!r} has no reference numbers in eebench/reference/paper_tables.csv")
    cache = MeasuredCache()
    rows = []
    scale = 0.01 if spec.fraction else 1.0
    # the base group first: other groups may calibrate relative to it; a column that takes another's
    # operating point after that column
    order = sorted(range(len(ref)), key=lambda i: (str(ref.loc[i, "row_group"]) != spec.base_group,
                                                   _follows(spec, ref.loc[i, "task"])))
    base_values: dict[str, float] = {}
    chosen: dict[tuple, str] = {}  # (group, method, column, run) → the setting chosen there
    for i in order:
        r = ref.loc[i]
        row = {"row_group": str(r["row_group"]), "method": r["method"], "task": r["task"], "metric": r["metric"],
               "paper": float(r["value"]), "paper_time_pct": _paper_time(r), "ours": np.nan, "ours_time_pct": np.nan,
               "ours_speedup": np.nan, "set": "", "run": "", "setting": "", "policy": "", "setting_json": "",
               "note": "", "flags": "", "paper_note": str(r.get("note", "") if pd.notna(r.get("note")) else ""),
               "_order": i}
        if r["task"] in spec.columns and r["method"] in spec.methods:
            runs, found = _find_runs(spec, r["method"], r["task"], sets)
            if not runs:
                row.update(flags=found, note=FLAGS[found])
            else:
                rule = spec.rule(row["row_group"], r["method"], r["task"])
                base = base_values.get(r["task"])
                paper = {"value": row["paper"] / scale, "time_pct": row["paper_time_pct"]}
                cells = []
                for run in runs:
                    key = (row["row_group"], r["method"], r["task"], str(run.dir))
                    cells.append(_cell_at_point(cache, run, spec, key, chosen, r["metric"], rule, paper,
                                                None if base is None else base / scale))
                cell = _pool_seeds(cells)
                if cell.get("ours_lo") is not None and not cell["ours_lo"] <= paper["value"] <= cell["ours_hi"]:
                    _flag(cell, "paper_outside_interval")
                cell["flags"] = ",".join(cell.get("flags", []))
                row.update(cell, set=found, run=str(runs[0].dir), train_seconds=_train_seconds(runs[0].dir),
                           model=runs[0].recipe.model.name)
                if "ours" in cell:
                    row["ours"] = cell["ours"] * scale
                    if cell.get("ours_lo") is not None:
                        row["ours_lo"], row["ours_hi"] = cell["ours_lo"] * scale, cell["ours_hi"] * scale
                    if "ours_std" in cell:
                        row["ours_std"] = cell["ours_std"] * scale
                    if row["row_group"] == spec.base_group:
                        base_values[r["task"]] = row["ours"]
        rows.append(row)
    frame = pd.DataFrame(rows).sort_values("_order").drop(columns="_order").reset_index(drop=True)
    if scores is not None:
        frame = merge_scores(frame, scores)
    frame = _derive(spec, frame)
    frame["diff"] = frame["ours"] - frame["paper"]
    return frame


def _follows(spec: TableSpec, column: str) -> bool:
    return column in spec.columns and spec.columns[column].same_point_as is not None


def _cell_at_point(cache, run, spec: TableSpec, key: tuple, chosen: dict, metric: str, rule: Rule, paper: dict,
                   base_value: float | None) -> dict:
    """A cell, at the setting chosen for the column it follows (``same_point_as``) when it has one; the
    setting it chose is remembered for the columns that follow it."""
    group, method, name, run_dir = key
    column = spec.columns[name]
    if column.same_point_as is not None and rule.value == "operating_point":
        setting = chosen.get((group, method, column.same_point_as, run_dir))
        if setting is None:
            return _flag({}, "unmeasurable", f"no operating point was chosen for {column.same_point_as}, whose "
                                             f"point this column applies")
        rule = rule.model_copy(update={"setting": json.loads(setting)})
    cell = _measure_cell(cache, run, column, metric, rule, paper, base_value)
    if cell.get("setting_json"):
        chosen[key] = cell["setting_json"]
    return cell


def _pool_seeds(cells: list[dict]) -> dict:
    """One cell from the cells of several seeds: mean of the metric and time, ``ours_std`` (sample
    standard deviation) and ``n_seeds``; the other fields from the first seed."""
    measured = [c for c in cells if "ours" in c]
    if len(cells) == 1 or not measured:
        return cells[0]
    out = dict(measured[0])
    out["flags"] = list(dict.fromkeys(f for c in measured for f in c.get("flags", [])))
    for key in ("ours", "ours_time_pct", "ours_speedup"):
        values = [c[key] for c in measured if key in c]
        if values:
            out[key] = float(np.mean(values))
    out["ours_std"] = mean_std([c["ours"] for c in measured])[1]
    out["n_seeds"] = n = len(measured)
    # the interval of the mean over seeds (Student t, n - 1 degrees of freedom), not of one seed's split
    half = float(student_t.ppf(0.975, n - 1)) * out["ours_std"] / np.sqrt(n)
    out["ours_lo"], out["ours_hi"] = out["ours"] - half, out["ours"] + half
    out["flags"] = [f for f in out["flags"] if f not in ("paper_outside_interval", "at_majority_rate")]
    return out


def _train_seconds(folder: Path) -> float:
    from eebench.run.folder import run_status

    seconds = run_status(folder).train_seconds
    return np.nan if seconds is None else float(seconds)


def read_scores(path: Path) -> pd.DataFrame:
    """A user's score file: CSV with columns row_group, method, task, value (the paper's scale)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"score file {path} not found; give a CSV with columns row_group,method,task,value")
    frame = pd.read_csv(path, dtype={"row_group": str})
    missing = {"row_group", "method", "task", "value"} - set(frame.columns)
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected "
                        f"row_group,method,task,value")
    bad = pd.to_numeric(frame["value"], errors="coerce").isna()
    if bad.any():
        line = int(bad.idxmax()) + 2
        raise UserError(f"{path}, line {line}: value {frame['value'][bad.idxmax()]!r} is not a number")
    return frame.assign(value=frame["value"].astype(float))


def merge_scores(frame: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for _, s in scores.iterrows():
        hit = ((frame["row_group"] == str(s["row_group"])) & (frame["method"] == s["method"])
               & (frame["task"] == s["task"]) & frame["ours"].isna() & (frame["run"] != ""))
        frame.loc[hit, "ours"] = s["value"]
        frame.loc[hit, "note"] = FLAGS["from_scores"]
        frame.loc[hit, "flags"] = "from_scores"
    return frame


def _paper_time(r: pd.Series) -> float | None:
    if pd.notna(r.get("time_pct")):
        return float(r["time_pct"])
    if pd.notna(r.get("speedup")) and float(r["speedup"]) > 0:
        return 100.0 / float(r["speedup"])
    return None


def derived_value(kind: str, values: dict[str, float], parts: dict[str, str] | None = None) -> float:
    """A derived column from the row's components: ``mean`` of all, or CS224N's dev score from the
    columns the spec names as its parts (sentiment and paraphrase accuracy, similarity Pearson)."""
    if kind == "mean":
        return float(np.mean(list(values.values())))
    if not parts or not set(parts.values()) <= set(values):
        return float("nan")  # the components are not all in this row
    return (values[parts["sentiment"]] + values[parts["paraphrase"]] + (values[parts["similarity"]] + 1.0) / 2.0) / 3.0


def _derive(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Recompute derived columns from components; flag where the paper's printed value disagrees."""
    # printed rounding: the parts (≤ half a unit each, so their mean or weighted mean ≤ half a unit)
    # and the total (half a unit): one unit of the last printed digit
    tol = 10.0 ** (-spec.digits) + 1e-9
    frame = frame.copy()
    frame["paper_recomputed"] = np.nan
    for (group, method), rows in frame.groupby(["row_group", "method"], sort=False):
        parts = rows[~rows["task"].isin(spec.derived)]
        for name, d in spec.derived.items():
            idx = rows.index[rows["task"] == name]
            if len(idx) == 0 or parts.empty:
                continue
            paper = derived_value(d.kind, dict(zip(parts["task"], parts["paper"])), d.parts)
            if np.isnan(paper):
                continue
            frame.loc[idx, "paper_recomputed"] = paper
            if abs(paper - frame.loc[idx[0], "paper"]) > tol:
                frame.loc[idx, "note"] = (f"paper prints {frame.loc[idx[0], 'paper']:g}, its components give "
                                          f"{paper:.{spec.digits + 1}f}")
                frame.loc[idx, "flags"] = "paper_inconsistent"
            ours = dict(zip(parts["task"], parts["ours"]))
            if parts["ours"].notna().all():
                frame.loc[idx, "ours"] = derived_value(d.kind, ours, d.parts)
                frame.loc[idx, "ours_time_pct"] = parts["ours_time_pct"].mean()
                frame.loc[idx, "set"] = ",".join(sorted(set(parts["set"])))
    return frame
