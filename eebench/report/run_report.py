"""The report of one run folder: layer-wise table, threshold sweeps, operating points, exit
histograms and metric-vs-time% curves — from stored results only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from eebench.console import console
from eebench.errors import UserError
from eebench.io import write_text
from eebench.calibration import row_setting
from eebench.policies import get_policy, setting_label
from eebench.report.pareto import area_under_curves, pareto_front, policy_curves
from eebench.intervals import caption, shown
from eebench.metrics import layerwise
from eebench.report.render import line_style, markdown, save_figure, write_table
from eebench.run.records import Calibration, OperatingPoint
from eebench.trace_data import load_trace, stored_key


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def report_run(run) -> Path:
    """report/ of one run: each section a table (md, tex, csv) and its figures, then report.md."""
    out = run.dir / "report"
    spec = run.spec
    splits = run.evaluated_splits()
    if not splits:
        raise UserError(f"{run.dir} has no evaluation results; run eebench evaluate {run.dir} --split dev")
    # every record is read (and checked) before anything is written
    layer_frames = {s: pd.DataFrame(rows) for s in splits if (rows := run.layerwise(s)) is not None}
    points = [dict(split=s, **p.dump(), note=_staleness(run, s, p) or _transfer_note(p))
              for s in splits for p in run.operating_points(s)]
    guaranteed = [c for c in run.calibrations() if c.guarantee is not None]
    speeds = [r.dump() for s in splits for r in run.speeds(s)]
    for s in splits:
        if run.trace_path(s).is_file():
            stored_key(run.trace_path(s))
    sections = [f"# eebench report: {run.name}\n",
                f"task {spec.name}, model {run.recipe.model.name}, strategy {run.recipe.train.strategy}; "
                f"metrics in percent; time% = 100·mean(exit layer)/L, speed-up = L/mean(exit layer).\n"]
    written: list[Path] = []
    for text, paths in (_layer_section(run, layer_frames, out), _sweep_sections(run, splits, points, out),
                        _policy_sections(run, splits, out), _points_section(run, points, out),
                        _guarantee_section(guaranteed, out), _speed_section(speeds, out)):
        sections += text
        written += paths
    lines = provenance_lines(run)
    sections += ["## Provenance\n", *(f"- {line}" for line in lines), "\n"]
    console.print("provenance: " + "; ".join(lines[:3]), highlight=False, soft_wrap=True)
    written.append(write_text(out / "report.md", "\n".join(sections)))
    shown = run.shown(out)
    console.print(f"report: {len(written)} files in {shown} (open {shown / 'report.md'})")  # where it will be
    return out


Section = tuple[list[str], list[Path]]
"""A report section: its report.md lines and the files it wrote."""


def _layer_section(run, layer_frames: dict, out: Path) -> Section:
    if not layer_frames:
        return [], []
    spec = run.spec
    wide, numbers, with_ci = None, None, False
    for s, f in layer_frames.items():
        with_ci |= any(f"{m}_lo" in f for m in spec.metrics)
        shown_f = with_intervals(f, spec.metrics).rename(columns={m: f"{s} {m}" for m in spec.metrics})
        raw = f.rename(columns={c: f"{s} {c}" for c in f.columns if c != "layer"})
        wide = shown_f if wide is None else wide.merge(shown_f, on="layer")
        numbers = raw if numbers is None else numbers.merge(raw, on="layer")
    title = f"Layer-wise {run.recipe.task.name} metrics of every exit" + (f"; {caption(run.recipe.output.bootstrap)}" if with_ci else "")
    written = write_table(wide, out / "layerwise", title, csv_frame=numbers)
    written += _layer_figure(layer_frames, spec.primary_metric, out / "layerwise")
    return ["## Layer-wise metrics\n", markdown(wide), "\n", "![layer-wise](layerwise.png)\n"], written


def _sweep_sections(run, splits: list[str], points: list[dict], out: Path) -> Section:
    metric, sections, written = run.spec.primary_metric, [], []
    for s in splits:
        for path in sorted(run.eval_dir(s).glob("sweep_*.csv")):
            policy = path.stem.removeprefix("sweep_")
            table = pd.read_csv(path)
            shown = table.drop(columns=["histogram"])
            for name in get_policy(policy).params:  # a setting as exact as it is applied, the rest 2 decimals
                if name in shown:
                    shown[name] = shown[name].map(lambda v: "" if pd.isna(v) else f"{v:g}")
            stem = out / f"sweep_{s}_{policy}"
            written += write_table(shown, stem, f"{policy} sweep on {s}", csv_frame=table.drop(columns=["histogram"]))
            sections += [f"## {policy} sweep on {s}\n", markdown(shown), "\n"]
            point = _operating_point(points, s, policy, table)
            if metric in table:
                written += _curve_figure(table, metric, point, out / f"curve_{s}_{policy}", f"{s}, {policy}")
                sections.append(f"![curve](curve_{s}_{policy}.png)\n")
            written += _histogram_figure(point, out / f"exit_hist_{s}_{policy}", f"{s}, {policy}")
            sections.append(f"![histogram](exit_hist_{s}_{policy}.png)\n")
    return sections, written


def _policy_sections(run, splits: list[str], out: Path) -> Section:
    """Every policy on each labelled stored trace: area under its curve, the Pareto front, the figure."""
    spec, metric, sections, written = run.spec, run.spec.primary_metric, [], []
    for s in splits:
        trace_path = run.trace_path(s)
        trace = load_trace(trace_path) if trace_path.is_file() else None
        if trace is None or trace.labels is None:
            continue
        curves = policy_curves(trace, spec)
        auc = area_under_curves(curves)
        front = pareto_front(curves)
        caption = (f"Exit policies on {s}. auc_mean_metric: the policy's best {metric} reachable within a time% "
                   f"budget, averaged over budgets from from_time_pct to 100 (the area under its curve in the "
                   f"figure divided by the range); from_time_pct: the largest of the policies' least time%, so "
                   f"that every policy covers the range; best_metric_at_50pct_time: its best {metric} at time% "
                   f"at most 50")
        written += write_table(auc, out / f"policies_{s}", caption)
        corners = front_at_budgets(front)
        written += write_table(corners, out / f"pareto_{s}", f"Pareto front across exit policies on {s}: the "
                               f"best point within each time% budget ({len(front)} points in pareto_{s}.csv)",
                               csv_frame=front)
        sections += [f"## Exit policies on {s}\n", f"{caption}.\n", markdown(auc), "\n",
                     f"Pareto front across policies, the best point within each time% budget "
                     f"({len(front)} points in pareto_{s}.csv):\n", markdown(corners), "\n"]
        full = layerwise((metric,), trace.logits, trace.labels, trace.regression)[-1][metric]
        written += _policies_figure(curves, front, metric, full, out / f"policies_{s}", s)
        sections.append(f"![policies](policies_{s}.png)\n")
    return sections, written


def _points_section(run, points: list[dict], out: Path) -> Section:
    if not points:
        return [], []
    spec, metric = run.spec, run.spec.primary_metric
    frame = pd.DataFrame(points)
    frame["setting"] = frame["setting"].map(setting_label)
    cols = ["split", "policy", "setting", "calibrated_on", *[m for m in spec.metrics if m in frame],
            "time_pct", "speedup", "mean_exit_layer"]
    unlabelled = ~frame[metric].notna() if metric in frame else pd.Series(True, index=frame.index)
    frame["note"] = [n or ("unlabelled split: no metric, time% only" if u else "")
                     for n, u in zip(frame["note"], unlabelled)]
    if frame["note"].astype(bool).any():
        cols.append("note")
    if "flops" in frame:
        unit, scale = flops_unit(frame["flops"])
        frame[f"{unit} / example"] = frame["flops"] / scale
        frame["MACs saved %"] = 100 * frame["macs_saved_fraction"]
        cols += [f"{unit} / example", "MACs saved %"]
    numbers = frame[cols].copy()
    if "intervals" in frame and frame["intervals"].map(bool).any():
        for name in [m for m in spec.metrics if m in frame] + ["time_pct"]:
            low = [(iv or {}).get(name, [None, None])[0] for iv in frame["intervals"]]
            high = [(iv or {}).get(name, [None, None])[1] for iv in frame["intervals"]]
            numbers[f"{name}_lo"], numbers[f"{name}_hi"] = low, high
            frame[name] = [shown(v, lo, hi) for v, lo, hi in zip(frame[name], low, high)]
        resamples = next((b["resamples"] for b in frame.get("bootstrap", []) if isinstance(b, dict)), 1000)
        title = f"Calibrated operating points; {caption(resamples)}"
    else:
        title = "Calibrated operating points"
    written = write_table(frame[cols], out / "operating_points", title, csv_frame=numbers)
    sections = ["## Calibrated operating points\n", markdown(frame[cols]), "\n"]
    files = [p for p in points if p.get("submission")]
    if files:  # report/ sits beside eval/: links relative to the report
        sections += ["GLUE submission files (predictions at the operating point, GLUE's file name and "
                     "format):\n", *[f"- {p['split']} / {p['policy']}: [{p['submission']}](../{p['submission']})"
                                    for p in files], "\n"]
    return sections, written


def _transfer_note(point: OperatingPoint) -> str:
    """A setting calibrated on another split whose numbers here fall outside that split's interval."""
    t = point.transfer or {}
    out = [f"{name} outside {t['calibrated_on']}'s [{v['interval'][0]:.1f}, {v['interval'][1]:.1f}]"
           for name, v in t.items() if isinstance(v, dict) and v.get("outside") and "interval" in v]
    if (t.get("guarantee") or {}).get("outside"):
        out.append(f"disagreement {t['guarantee']['realised_risk']:.3f} > eps {t['guarantee']['eps']:g}")
    return "; ".join(out)


def _guarantee_section(calibrations: list, out: Path) -> Section:
    """Settings fitted with --guarantee: what they guarantee, and the time% given up for it."""
    if not calibrations:
        return [], []
    rows = [{"policy": c.policy, "setting": setting_label(c.setting), "split": c.split, "n": g["n"],
             "eps": g["eps"], "1 - delta": 1 - g["delta"], "empirical risk": g["empirical_risk"],
             "p-value": g["p_value"], "time_pct": g["time_pct"],
             "point-estimate time_pct": g["point_estimate_time_pct"],
             "time% given up": (g["time_pct"] - g["point_estimate_time_pct"]
                                if g["point_estimate_time_pct"] is not None else None)}
            for c in calibrations for g in [c.guarantee]]
    frame = pd.DataFrame(rows)
    caption = ("Operating points with a guarantee: disagreement with the full model <= eps with probability >= "
               "1 - delta over the calibration draw (Learn-then-Test, fixed sequence); the point estimate is the "
               "most aggressive setting whose empirical disagreement is <= eps, with no guarantee")
    written = write_table(frame, out / "guaranteed_points", caption, digits=3)
    return ["## Operating points with a guarantee\n", caption + ".\n", markdown(frame, 3), "\n"], written


def with_intervals(frame: pd.DataFrame, metrics) -> pd.DataFrame:
    """Each metric column as ``84.9 [83.7, 86.1]`` where its ``_lo`` / ``_hi`` columns exist (those dropped)."""
    out = frame.copy()
    for m in metrics:
        if f"{m}_lo" in out and m in out:
            out[m] = [shown(v, lo, hi) for v, lo, hi in zip(out[m], out[f"{m}_lo"], out[f"{m}_hi"])]
    return out.drop(columns=[c for c in out.columns if c.endswith(("_lo", "_hi"))])


def _speed_section(speeds: list[dict], out: Path) -> Section:
    if not speeds:
        return [], []
    frame = speed_frame(speeds)
    written = write_table(frame, out / "measured_speed", "Measured wall-clock of the real early-exit "
                          "engine against the full model (eebench speed)")
    note = ("Wall-clock of the engine (it stops computing at the exit) against every layer; ideal "
            "speed-up = L / mean(exit layer). Batch 1: p50 / p95 per example over a stream of the "
            "split's examples.\n")
    return ["## Measured speed (real early exit)\n", note, markdown(frame), "\n"], written


def provenance_lines(run) -> list[str]:
    """What the run was made with, from its status.json (a multitask task's from its parent run)."""
    from eebench.run.folder import run_status

    status = run_status(run.owner_dir)
    p = status.provenance
    if not p:
        return ["not recorded (the run was trained by an eebench older than provenance records)"]
    model = p.get("model") or {}
    weights = {"hub": lambda: f"hub {model.get('id')} at commit {model.get('commit') or 'unknown'}",
               "folder": lambda: f"folder {model.get('path')} (weights sha256 {str(model.get('weights_sha256'))[:16]}…)",
               "random": lambda: f"random init ({model.get('model_type')})"}.get(model.get("kind"), lambda: "unknown")()
    data = [f"{split}: {d.get('n')} examples from {d.get('source')} (fingerprint {str(d.get('fingerprint'))[:12]}…)"
            for split, d in run_status(run.dir).data.items()]
    return [f"eebench {p.get('eebench')} (commit {p.get('eebench_commit') or 'none: not a git checkout'})",
            "torch {torch}, transformers {transformers}, accelerate {accelerate}, datasets {datasets}, "
            "numpy {numpy}, Python {python}".format(**{k: p.get(k) for k in
                                                      ("torch", "transformers", "accelerate", "datasets", "numpy",
                                                       "python")}),
            f"device {p.get('device')} {p.get('device_name') or ''}".rstrip(), f"model weights: {weights}", *data]


def speed_frame(records: list[dict]) -> pd.DataFrame:
    """One row per measured (split, policy, batch size) from eval/<split>/speed_<policy>.json."""
    rows = []
    for r in records:
        for key, b in r.items():
            if not key.startswith("batch_"):
                continue
            row = {"split": r["split"], "policy": r["policy"], "setting": setting_label(r["setting"]),
                   "batch": int(key.removeprefix("batch_")), "time_pct": r["time_pct"],
                   "ideal speed-up": r["ideal_speedup"], "measured speed-up": b["measured_speedup"],
                   "of ideal": b["of_ideal"], "agreement %": 100 * b["agreement"]}
            if "engine_p50_ms" in b:
                row.update({"engine p50 ms": b["engine_p50_ms"], "engine p95 ms": b["engine_p95_ms"],
                            "full p50 ms": b["full_p50_ms"], "full p95 ms": b["full_p95_ms"]})
            rows.append(row)
    return pd.DataFrame(rows)


def flops_unit(values: pd.Series) -> tuple[str, float]:
    """The unit that shows FLOPs per example with digits before the point (a 6-layer MiniLM at 40
    tokens is 0.7 GFLOPs, a tiny test model 0.002)."""
    top = float(values.abs().max()) if len(values) else 0.0
    for unit, scale in (("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6), ("kFLOPs", 1e3)):
        if top >= scale:
            return unit, scale
    return "FLOPs", 1.0


def front_at_budgets(front: pd.DataFrame, budgets=(20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 100)) -> pd.DataFrame:
    """The Pareto front read at round time% budgets: per budget the best point within it (a
    front of dozens of thresholds that differ in the fourth decimal reads as a handful of rows)."""
    rows = []
    for budget in budgets:
        within = front[front["time_pct"] <= budget + 1e-9]
        if len(within):
            rows.append({"time% budget": f"≤ {budget}", **within.loc[within["metric"].idxmax()].to_dict()})
    frame = pd.DataFrame(rows)
    return frame.drop_duplicates(subset=["policy", "setting"], keep="first") if len(frame) else frame


def _operating_point(points: list[dict], split: str, policy: str, table: pd.DataFrame) -> dict:
    """The calibrated point when there is one, else the swept setting closest to 50% time."""
    for point in points:
        if point["split"] == split and point["policy"] == policy:
            return point
    row = table.iloc[(table["time_pct"] - 50).abs().argmin()]
    return {"setting": row_setting(row, get_policy(policy)), "time_pct": float(row["time_pct"]),
            "histogram": json.loads(row["histogram"])}


def _staleness(run, split: str, point: OperatingPoint) -> str:
    """Why an operating point may not describe the run's current model or data ("" when it does)."""
    if point.stale:
        return f"stale: {point.stale}"
    trace = run.trace_path(split)
    if point.trace_key and trace.is_file() and stored_key(trace) != point.trace_key:
        return f"stale: computed on an older trace of {split} (re-run eebench evaluate)"
    cal_path = run.calibration_path(point.policy)
    if point.calibration_key and cal_path.is_file():
        cal = Calibration.load(cal_path, run.dir)
        if cal.trace_key and cal.trace_key != point.calibration_key:
            return "stale: the calibration was refitted since (re-run eebench evaluate)"
    return ""


def _layer_figure(frames: dict, metric: str, stem: Path) -> list[Path]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i, (split, f) in enumerate(frames.items()):
        ax.plot(f["layer"], f[metric], label=split, **line_style(i))
    ax.set_xlabel("exit layer")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_xticks(list(next(iter(frames.values()))["layer"]))
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, stem)


def _curve_figure(table: pd.DataFrame, metric: str, point: dict, stem: Path, title: str) -> list[Path]:
    plt = _plt()
    t = table.sort_values("time_pct")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(t["time_pct"], t[metric], marker=".", label="sweep")
    if metric in point:
        ax.scatter([point["time_pct"]], [point[metric]], color="red", marker="D", zorder=3,
                   label=f"calibrated ({setting_label(point['setting'])})")
    ax.set_xlabel("time% (100 · mean exit layer / L)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, stem)


def _policies_figure(curves: pd.DataFrame, front: pd.DataFrame, metric: str, full: float, stem: Path,
                     split: str) -> list[Path]:
    """Each policy's best metric reachable within a time% budget (a step curve up to 100%: the whole
    model is every policy's last resort), each with its own colour, marker and line style; policies
    whose curves coincide share one legend entry ("entropy = max_prob"), the full model is a star."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 3.6))
    for i, (names, f) in enumerate(coinciding_fronts(curves)):
        t = np.append(f[:, 0], 100.0)
        m = np.append(f[:, 1], f[-1, 1])
        style = line_style(i)
        ax.plot(t, m, drawstyle="steps-post", ls=style["ls"], color=style["color"], lw=style["lw"])
        ax.plot(f[:, 0], f[:, 1], ls="none", **{k: v for k, v in style.items() if k not in ("ls", "lw")},
                label=" = ".join(names))
    ax.plot([100.0], [full], marker="*", ms=12, color="black", ls="none", label="all layers (full model)")
    ax.set_xlabel("time% (100 · mean exit layer / L)")
    ax.set_ylabel(f"best {metric} (%) within the time%")
    ax.set_title(f"exit policies on {split}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save_figure(fig, stem)


def coinciding_fronts(curves: pd.DataFrame) -> list[tuple[list[str], np.ndarray]]:
    """Each policy's Pareto front ([k, 2]: time%, metric), policies with identical fronts together
    (entropy and max_prob on a binary task)."""
    groups: list[tuple[list[str], np.ndarray]] = []
    for name, group in curves.groupby("policy", sort=False):
        f = pareto_front(group)[["time_pct", "metric"]].to_numpy()
        same = next((names for names, g in groups if g.shape == f.shape and np.allclose(g, f)), None)
        if same is not None:
            same.append(name)
        else:
            groups.append(([name], f))
    return groups


def _histogram_figure(point: dict, stem: Path, title: str) -> list[Path]:
    plt = _plt()
    hist = point["histogram"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(range(1, len(hist) + 1), hist)
    ax.set_xlabel("exit layer")
    ax.set_ylabel("examples")
    ax.set_xticks(range(1, len(hist) + 1))
    ax.set_title(f"{title}: {setting_label(point['setting'])}, time% {point['time_pct']:.1f}")
    return save_figure(fig, stem)
