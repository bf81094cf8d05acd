"""Paper tables as declarative specs over one tidy results frame.

A spec (``eebench/report/specs/<table-id>.toml``) names the paper's rows (methods) and columns (tasks), which
recipe fills which cell (``recipes.<set>`` path patterns with ``{task}`` and ``{method}``), and how a
measured cell is read from its run (``rules``: the last exit, or an exit policy's operating point
calibrated to a target). ``measure`` builds the tidy frame — one row per paper number, with ours beside
it where the run exists — and ``display`` turns it into the printed table that Markdown, LaTeX and CSV
render alike. Everything is read from stored traces; no model runs here.
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError

from eebench.calibrate import choose, exit_predictions, row_setting, sweep
from eebench.errors import UserError
from eebench.metrics import METRICS, collapsed
from eebench.policies import get_policy, setting_label
from eebench.seeds import SEED_SUFFIX
from eebench.recipe import _Strict, describe_validation_error, load_recipe
from eebench.report.paper import ALIASES, reference_numbers

SETS = ("paper", "cpu")
"""Recipe sets: ``paper`` = the papers' settings (BERT-base, GPU), ``cpu`` = MiniLM-L6 on local data files."""


class Rule(_Strict):
    """How a measured cell is read from its run's dev trace."""

    value: Literal["last_exit", "operating_point"] = "operating_point"
    policy: str = "entropy"
    setting: dict | None = None
    """A fixed policy setting (e.g. CsdBERT's θ and R); otherwise calibrate to a target below."""
    max_drop: float | None = Field(None, ge=0)
    """Least time% whose metric ≥ reference − max_drop (reference: see relative_to)."""
    relative_to: Literal["self", "base"] = "self"
    """The run's own last exit, or the table's base row in the same column (comparable accuracy)."""
    target_time_pct: float | None = Field(None, gt=0, le=100)
    match_paper: bool = False
    """Calibrate to the time% (or 100 / speed-up) the paper prints for this cell."""


class Column(_Strict):
    task: str
    """eebench task name; also the ``{task}`` of recipe paths."""
    split: str = "dev"
    calibrate_split: str | None = None
    """Fit the rule on this split and apply its setting to ``split`` (e.g. dev → unlabelled test)."""
    policy: str | None = None
    """The exit policy of this column's operating points when it differs from the rule's (e.g. "lte"
    for a regression task, as BERTer exits)."""


class Derived(_Strict):
    kind: Literal["mean", "dev_score"]
    """mean: plain mean of the row's task columns; dev_score: CS224N's (SST acc + para acc + (r + 1) / 2) / 3."""


class TableSpec(_Strict):
    id: str
    title: str
    digits: int = 1
    fraction: bool = False
    """The paper prints fractions (BERTer): our percentages are divided by 100."""
    columns: dict[str, Column]
    methods: dict[str, str]
    """Paper row label → ``{method}`` of recipe paths (rows not listed are the paper's numbers only)."""
    rules: dict[str, Rule] = Field(default_factory=lambda: {"*": Rule()})
    """Paper method label or row group → rule (a method's rule wins); ``*`` for the rest."""
    base_group: str = "base"
    derived: dict[str, Derived] = Field(default_factory=dict)
    recipes: dict[str, str] = Field(default_factory=dict)
    """Recipe set (paper, cpu) → path pattern, e.g. recipes/compare/{task}_{method}.toml."""
    notes: str = ""
    train_time: bool = False
    """Show each run's training time (h:mm:ss) beside the paper's (BERTer prints hh:mm)."""

    def rule(self, group: str, method: str, column: str | None = None) -> Rule:
        rule = self.rules.get(method) or self.rules.get(str(group)) or self.rules.get("*") or Rule()
        policy = self.columns[column].policy if column in self.columns else None
        return rule.model_copy(update={"policy": policy}) if policy and rule.value == "operating_point" else rule

    def recipe_path(self, set_name: str, method: str, column: str) -> Path | None:
        pattern = self.recipes.get(set_name)
        if pattern is None:
            return None
        from eebench.paths import resolve_recipe

        return resolve_recipe(pattern.format(task=self.columns[column].task, method=self.methods[method]))


def spec_ids() -> list[str]:
    folder = resources.files("eebench").joinpath("report/specs")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_spec(table_id: str) -> TableSpec:
    key = ALIASES.get(table_id, table_id)
    if key not in spec_ids():
        raise UserError(f"unknown table {table_id!r}; choose one of {', '.join(spec_ids())} "
                        f"(aliases: {', '.join(ALIASES)})")
    source = f"eebench/report/specs/{key}.toml"
    text = resources.files("eebench").joinpath(f"report/specs/{key}.toml").read_text(encoding="utf-8")
    try:
        return TableSpec.model_validate(tomllib.loads(text))
    except ValidationError as err:
        raise UserError(describe_validation_error(err, source)) from None


# ----------------------------------------------------------------------------------- cells
def run_folder(recipe_path: Path, task: str | None = None) -> Path:
    """The run folder a recipe writes; for a multitask recipe, the folder of its ``task``."""
    recipe = load_recipe(recipe_path)
    folder = recipe.run_dir(recipe_path.stem)
    return folder / "tasks" / task if recipe.is_multitask and task else folder


def finished(folder: Path) -> bool:
    """A run folder whose finetune completed (status.json state "finished"; "done" in older folders)."""
    from eebench.rundir import run_status

    return run_status(folder).finished


def seed_folders(folder: Path) -> list[Path]:
    """The seeded runs of a recipe (``finetune --seeds``, ``--run-missing --seeds``): ``<run>-seed<S>``
    beside the run folder (for a multitask task folder, ``<run>-seed<S>/tasks/<task>``)."""
    if folder.parent.name == "tasks":
        parent = folder.parent.parent
        return [p / "tasks" / folder.name for p in sorted(parent.parent.glob(f"{parent.name}-seed*"))
                if SEED_SUFFIX.search(p.name)]
    return [p for p in sorted(folder.parent.glob(f"{folder.name}-seed*")) if SEED_SUFFIX.search(p.name)]


def _find_runs(spec: TableSpec, method: str, column: str, sets: tuple[str, ...]):
    """The finished runs (by set order) that fill this cell — the recipe's seeded runs when there are
    any, else its own run: ([runs], set name) or ([], reason)."""
    from eebench.rundir import open_run

    reason = "no recipe"
    for set_name in sets:
        path = spec.recipe_path(set_name, method, column)
        if path is None or not path.is_file():
            continue
        folder = run_folder(path, spec.columns[column].task)
        done = [f for f in seed_folders(folder) if finished(f.parent.parent if f.parent.name == "tasks" else f)]
        if not done and finished(folder):
            done = [folder]
        if not done:
            reason = "not run"
            continue
        return [open_run(f) for f in done], set_name
    return [], reason


class _Measured:
    """Per-run caches: a trace and its policy sweeps are loaded once per table."""

    def __init__(self):
        self.traces: dict = {}
        self.sweeps: dict = {}

    def trace(self, run, split: str):
        from eebench.trace import load_trace

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


def _metric_at(trace, layers: np.ndarray, metric: str) -> float:
    return 100.0 * float(METRICS[metric](exit_predictions(trace, layers), trace.labels))


def _measure_cell(cache: _Measured, run, column: Column, metric: str, rule: Rule, paper_time: float | None,
                  base_value: float | None) -> dict:
    target = cache.trace(run, column.split)
    if target is None:
        return {"note": f"no {column.split} trace in {run.dir} (eebench evaluate {run.dir} --split {column.split})"}
    trace = cache.trace(run, column.calibrate_split or column.split)
    if trace is None or trace.labels is None:
        return {"note": f"no labelled {column.calibrate_split or column.split} trace in {run.dir}"}
    if metric not in METRICS:
        return {"note": f"metric {metric} is not computed by eebench"}
    n = trace.num_layers
    if rule.value == "last_exit":
        layers = np.full(len(target.ids), n)
        return _point(target, layers, metric, {"setting": "last exit", "policy": "static",
                                                "setting_json": json.dumps({"layer": n})})
    policy = get_policy(rule.policy)
    if policy.needs and getattr(trace, policy.needs) is None:
        return {"note": f"policy {policy.name} needs {policy.needs} scores the run did not record"}
    if not policy.serves(trace.regression):
        return {"note": f"policy {policy.name} does not apply to a regression task"}
    note = ""
    if rule.setting is not None:
        setting = dict(rule.setting)
    else:
        table = cache.sweep(run, trace, policy).copy()
        if metric not in table:
            table[metric] = [_metric_at(trace, layers, metric)
                             for layers in policy.exits(trace, [row_setting(r, policy) for _, r in table.iterrows()])]
        target_time = paper_time if rule.match_paper else rule.target_time_pct
        if rule.match_paper and paper_time is None:
            return {"note": "the paper prints no time% / speed-up for this cell"}
        if target_time is not None:
            best = _choose(table, metric, target_time_pct=target_time)
        else:
            reference = _metric_at(trace, np.full(len(trace.ids), n), metric)
            if rule.relative_to == "base":
                if base_value is None:
                    note = "base row not measured: drop taken from the run's own last exit; "
                else:
                    reference = base_value
            best = _choose(table, metric, final=reference, max_drop=rule.max_drop or 0.0)
            if best[metric] < reference - (rule.max_drop or 0.0) - 1e-9:
                note += "target not reached: best point shown; "
        setting = row_setting(best, policy)
    layers = policy.exits(target, [setting])[0]
    return _point(target, layers, metric, {"setting": f"{policy.name} {setting_label(setting)}",
                                           "policy": policy.name, "setting_json": json.dumps(setting),
                                           "note": note.rstrip("; ")})


def _point(trace, layers: np.ndarray, metric: str, fields: dict) -> dict:
    """time% and speed-up at these exits; the metric where the split has labels."""
    mean = float(layers.mean())
    n = trace.num_layers
    out = {"ours_time_pct": 100.0 * mean / n, "ours_speedup": n / mean, **fields}
    if trace.labels is not None:
        out["ours"] = _metric_at(trace, layers, metric)
        if not trace.regression and collapsed(exit_predictions(trace, layers), trace.labels):
            out["note"] = (out.get("note", "") + "; " if out.get("note") else "") + "predictions collapsed to one class"
    else:
        out["note"] = (out.get("note", "") + "; " if out.get("note") else "") + "unlabelled split: metric from --scores"
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
    cache = _Measured()
    rows = []
    scale = 0.01 if spec.fraction else 1.0
    # the base group first: other groups may calibrate relative to it
    order = sorted(range(len(ref)), key=lambda i: str(ref.loc[i, "row_group"]) != spec.base_group)
    base_values: dict[str, float] = {}
    for i in order:
        r = ref.loc[i]
        row = {"row_group": str(r["row_group"]), "method": r["method"], "task": r["task"], "metric": r["metric"],
               "paper": float(r["value"]), "paper_time_pct": _paper_time(r), "ours": np.nan, "ours_time_pct": np.nan,
               "ours_speedup": np.nan, "set": "", "run": "", "setting": "", "policy": "", "setting_json": "",
               "note": "", "paper_note": str(r.get("note", "") if pd.notna(r.get("note")) else ""), "_order": i}
        if r["task"] in spec.columns and r["method"] in spec.methods:
            runs, found = _find_runs(spec, r["method"], r["task"], sets)
            if not runs:
                row["note"] = found
            else:
                column = spec.columns[r["task"]]
                rule = spec.rule(row["row_group"], r["method"], r["task"])
                base = base_values.get(r["task"])
                cells = [_measure_cell(cache, run, column, r["metric"], rule, row["paper_time_pct"],
                                       None if base is None else base / scale) for run in runs]
                cell = _pool_seeds(cells)
                row.update(cell, set=found, run=str(runs[0].dir), train_seconds=_train_seconds(runs[0].dir))
                if "ours" in cell:
                    row["ours"] = cell["ours"] * scale
                    if "ours_std" in cell:
                        row["ours_std"] = cell["ours_std"] * scale
                    if row["row_group"] == spec.base_group:
                        base_values[r["task"]] = row["ours"]
        rows.append(row)
    frame = pd.DataFrame(rows).sort_values("_order").drop(columns="_order").reset_index(drop=True)
    if scores is not None:
        frame = _merge_scores(frame, scores)
    frame = _derive(spec, frame)
    frame["diff"] = frame["ours"] - frame["paper"]
    return frame


def _pool_seeds(cells: list[dict]) -> dict:
    """One cell from the cells of several seeds: mean of the metric and time, ``ours_std`` (sample
    standard deviation) and ``n_seeds``; the other fields from the first seed."""
    measured = [c for c in cells if "ours" in c]
    if len(cells) == 1 or not measured:
        return cells[0]
    out = dict(measured[0])
    for key in ("ours", "ours_time_pct", "ours_speedup"):
        values = [c[key] for c in measured if key in c]
        if values:
            out[key] = float(np.mean(values))
    out["ours_std"] = float(np.std([c["ours"] for c in measured], ddof=1)) if len(measured) > 1 else 0.0
    out["n_seeds"] = len(measured)
    return out


def _train_seconds(folder: Path) -> float:
    from eebench.rundir import run_status

    seconds = run_status(folder).train_seconds
    return np.nan if seconds is None else float(seconds)


def clock(seconds: float) -> str:
    """h:mm:ss."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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


def _merge_scores(frame: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for _, s in scores.iterrows():
        hit = ((frame["row_group"] == str(s["row_group"])) & (frame["method"] == s["method"])
               & (frame["task"] == s["task"]) & frame["ours"].isna() & (frame["run"] != ""))
        frame.loc[hit, "ours"] = s["value"]
        frame.loc[hit, "note"] = "metric from the score file"
    return frame


def _paper_time(r: pd.Series) -> float | None:
    if pd.notna(r.get("time_pct")):
        return float(r["time_pct"])
    if pd.notna(r.get("speedup")) and float(r["speedup"]) > 0:
        return 100.0 / float(r["speedup"])
    return None


def derived_value(kind: str, values: dict[str, float], metrics: dict[str, str]) -> float:
    """A derived column from the row's components: ``mean`` of all, or CS224N's dev score."""
    if kind == "mean":
        return float(np.mean(list(values.values())))
    sst = next(v for t, v in values.items() if metrics[t] == "acc" and "SST" in t)
    para = next(v for t, v in values.items() if metrics[t] == "acc" and "SST" not in t)
    r = next(v for t, v in values.items() if metrics[t] == "pearson")
    return (sst + para + (r + 1.0) / 2.0) / 3.0


def _derive(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Recompute derived columns from components; flag where the paper's printed value disagrees."""
    # printed rounding: the parts (≤ half a unit each, so their mean or weighted mean ≤ half a unit)
    # and the total (half a unit): one unit of the last printed digit
    tol = 10.0 ** (-spec.digits) + 1e-9
    frame = frame.copy()
    frame["paper_recomputed"] = np.nan
    for (group, method), rows in frame.groupby(["row_group", "method"], sort=False):
        parts = rows[~rows["task"].isin(spec.derived)]
        metrics = dict(zip(parts["task"], parts["metric"]))
        for name, d in spec.derived.items():
            idx = rows.index[rows["task"] == name]
            if len(idx) == 0 or parts.empty:
                continue
            try:
                paper = derived_value(d.kind, dict(zip(parts["task"], parts["paper"])), metrics)
            except StopIteration:
                continue
            frame.loc[idx, "paper_recomputed"] = paper
            if abs(paper - frame.loc[idx[0], "paper"]) > tol:
                frame.loc[idx, "note"] = (f"paper prints {frame.loc[idx[0], 'paper']:g}, its components give "
                                          f"{paper:.{spec.digits + 1}f}")
            ours = dict(zip(parts["task"], parts["ours"]))
            if parts["ours"].notna().all():
                frame.loc[idx, "ours"] = derived_value(d.kind, ours, metrics)
                frame.loc[idx, "ours_time_pct"] = parts["ours_time_pct"].mean()
                frame.loc[idx, "set"] = ",".join(sorted(set(parts["set"])))
    return frame


# ----------------------------------------------------------------------------------- display
def display(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The printed table: a row per (group, method), a column per task (and its time% where the paper
    gives one). A measured cell reads ``ours (paper, ±diff)``; an unmeasured one ``paper*``."""
    d = spec.digits
    has_time = frame["paper_time_pct"].notna().any()
    out = []
    for (group, method), rows in frame.groupby(["row_group", "method"], sort=False):
        line = {"group": group, "method": method}
        for _, r in rows.iterrows():
            label = f"{r['task']} {r['metric']}"
            if pd.notna(r["ours"]):
                spread = (f" ± {r['ours_std']:.{d}f}" if "n_seeds" in r and pd.notna(r.get("n_seeds"))
                          and r["n_seeds"] > 1 else "")
                line[label] = f"{r['ours']:.{d}f}{spread} ({r['paper']:.{d}f}, {r['diff']:+.{d}f})"
                if not has_time and r["policy"] not in ("", "static") and pd.notna(r["ours_time_pct"]):
                    line[label] += f" @ {r['ours_time_pct']:.0f}% time"
            else:
                line[label] = f"{r['paper']:.{d}f}*"
            if has_time and pd.notna(r["paper_time_pct"]):
                paper_t = f"{r['paper_time_pct']:.1f}"
                line[f"{r['task']} time%"] = (f"{r['ours_time_pct']:.1f} ({paper_t})" if pd.notna(r["ours"])
                                              else f"{paper_t}*")
        if spec.train_time:
            ours = rows["train_seconds"].dropna() if "train_seconds" in rows else pd.Series(dtype=float)
            paper = next((m.group(1) for m in rows["paper_note"].map(_PAPER_TIME.search) if m), "")
            line["train time"] = (clock(ours.iloc[0]) if len(ours) else "") + (f" (paper {paper} h:mm)" if paper else "")
        out.append(line)
    return pd.DataFrame(out).fillna("")


_PAPER_TIME = re.compile(r"training time (\d+:\d+)")


def caption(spec: TableSpec, frame: pd.DataFrame) -> str:
    measured = int(frame["ours"].notna().sum())
    sets = sorted({s for s in frame["set"] if s})
    text = (f"{spec.title}. Cells: ours (paper, ours − paper); * = paper's number, not run here "
            f"({measured} of {len(frame)} cells measured")
    return text + (f", recipe set {'/'.join(sets)})." if sets else ").")


def mismatches(frame: pd.DataFrame) -> list[str]:
    """The paper's derived values that do not follow from its own components."""
    bad = frame[frame["note"].str.startswith("paper prints", na=False)]
    return [f"{r['method']} ({r['row_group']}) {r['task']}: {r['note']}" for _, r in bad.iterrows()]


def write_submissions(spec: TableSpec, frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """GLUE submission files for every measured cell on an unlabelled split, one folder per
    (recipe set, row group, method): ``<id>_submission/<set>/<group>_<method>/<Task>.tsv``."""
    from eebench.report.submission import write_submission
    from eebench.rundir import open_run

    cache, paths = _Measured(), []
    for _, r in frame[(frame["policy"] != "") & frame["note"].str.contains("unlabelled", na=False)].iterrows():
        run = open_run(r["run"])
        trace = cache.trace(run, spec.columns[r["task"]].split)
        layers = get_policy(r["policy"]).exits(trace, [json.loads(r["setting_json"])])[0]
        label = f"{r['row_group']}_{r['method']}".replace(" ", "_").replace("/", "-")
        path = write_submission(Path(out_dir) / f"{spec.id}_submission" / r["set"] / label, run.spec, trace, layers)
        if path is not None:
            paths.append(path)
    return paths


def render(table_id: str, out_dir: Path, sets: tuple[str, ...] = SETS,
           scores: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """Write ``<id>.md/.tex/.csv`` (the printed table), ``<id>_cells.csv`` (the tidy frame), figures
    across methods, and GLUE submission files for unlabelled test cells."""
    from eebench.io import atomic_write
    from eebench.report.render import write_table

    spec = load_spec(table_id)
    frame = measure(spec, sets, read_scores(scores) if scores else None)
    shown = display(spec, frame)
    stem = Path(out_dir) / spec.id
    paths = write_table(shown, stem, caption(spec, frame), digits=spec.digits)
    paths.append(atomic_write(stem.with_name(spec.id + "_cells.csv"),
                              lambda p: frame.to_csv(p, index=False, float_format="%.4g")))
    paths += write_submissions(spec, frame, out_dir)
    paths += table_figures(spec, frame, out_dir)
    return frame, shown, paths


def table_figures(spec: TableSpec, frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Across methods, per task column: layer-wise metric of every exit, and the exit-layer histogram
    at the measured operating point (RomeBERT Fig. 2-6, MetaBERT Fig. 2). Only measured cells."""
    from eebench.report.render import save_figure
    from eebench.rundir import open_run

    measured = frame[frame["ours"].notna() & (frame["run"] != "") & frame["task"].isin(spec.columns)]
    if measured.empty:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cache = _Measured()
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
            per_layer = [_metric_at(trace, np.full(len(trace.ids), i), metric) for i in range(1, n + 1)]
            label = rows[rows["run"] == folder]["method"].iloc[-1]
            ax1.plot(range(1, n + 1), per_layer, marker="o", label=label)
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

