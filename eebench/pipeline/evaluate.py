"""`eebench evaluate`: trace a split (eebench.pipeline.trace), write its layer-wise metrics, the
recipe policy's sweep and every saved calibration applied to it (eebench.pipeline.calibrate), refitting
a calibration first when the model or data changed since it was fitted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eebench.console import console
from eebench.data.tasks import TaskSpec
from eebench.errors import UserError
from eebench.io import write_csv, write_json
from eebench.calibration import sweep
from eebench.metrics import collapse, layerwise
from eebench.pipeline.calibrate import apply_calibration, fit, fit_guarantee, sweep_grid
from eebench.pipeline.trace import ensure_trace
from eebench.policies import get_policy
from eebench.run.folder import Run
from eebench.trace_data import Trace, stored_key
from eebench.intervals import layerwise_intervals
from eebench.run.records import Calibration, Layerwise


def evaluate(run: Run, split: str, model=None, retrace: bool = False, device: str | None = None,
             bootstrap: int | None = None) -> dict:
    """Trace ``split`` (or reuse its trace), write layer-wise metrics, the recipe policy's sweep and
    every saved calibration applied to this split (refitted first when the model or data changed
    since it was fitted and its split is at hand)."""
    calibrations = run.calibrations()  # read (and checked) before anything is written
    trace = ensure_trace(run, split, model, retrace=retrace, device=device)
    spec, out = run.spec, run.eval_dir(split)
    result: dict = {"split": run.split_name(split), "n": len(trace.ids), "traced_on": trace.device}
    if trace.labels is not None:
        rows = layerwise(spec.metrics, trace.logits, trace.labels, trace.regression)
        resamples = run.recipe.output.bootstrap if bootstrap is None else bootstrap
        for row, extra in zip(rows, layerwise_intervals(trace, spec.metrics, resamples)):
            row.update(extra)  # each exit's metrics with their bootstrap intervals (<metric>_lo / _hi)
        Layerwise(rows).save(out / "layerwise.json")
        write_csv(out / "layerwise.csv", pd.DataFrame(rows))
        result["layerwise"] = rows
        m = spec.primary_metric
        console.print(f"{run.split_name(split)}: {m} per exit " + " ".join("none" if r[m] != r[m] else f"{r[m]:.1f}" for r in rows))
        warnings = warn_collapse(f"{run.shown()} {run.split_name(split)}", trace.logits, trace.labels, spec)
        write_json(out / "warnings.json", warnings)
        result["warnings"] = warnings
    policy = get_policy(run.recipe.exit.policy)
    if (not policy.needs or getattr(trace, policy.needs) is not None) and policy.serves(trace.regression):
        table = sweep(trace, spec, policy, sweep_grid(run, policy, trace))
        write_csv(out / f"sweep_{policy.name}.csv", table)
    for cal in calibrations:
        cal, stale = _fresh(run, cal, split, trace, model, device)
        result[cal.policy] = apply_calibration(run, trace, cal, stale, bootstrap).dump()
    return result


def _fresh(run: Run, cal: Calibration, split: str, trace: Trace, model,
           device: str | None = None) -> tuple[Calibration, str | None]:
    """The calibration refitted when it was fitted on another trace than its split's current one;
    when that split's data is not at hand, the old one and why it is stale."""
    if cal.trace_key is None:
        return cal, None
    if run.data_name and not run.calibration_path(cal.policy).is_file():
        # the run's own calibration applied to other data: check it against the run's own trace
        own = run.dir / "traces" / f"{cal.split}.npz"
        key = stored_key(own) if own.is_file() else None
        return cal, (None if key in (None, cal.trace_key) else
                     f"fitted on an older trace of {cal.split}; re-run eebench evaluate {run.shown()} --split {cal.split}")
    if cal.split == split:
        fitted_on = trace
    else:
        try:
            fitted_on = ensure_trace(run, cal.split, model, device=device)
        except UserError as err:
            return cal, f"fitted on an older trace of {cal.split}; its data is not at hand to refit ({err})"
    if fitted_on.key == cal.trace_key:
        return cal, None
    console.print(f"[yellow]calibration {run.calibration_path(cal.policy)} was fitted on an older trace[/] of "
                  f"{cal.split} (model or data changed); refitting it to the same target")
    if cal.guarantee is not None:
        return fit_guarantee(run, cal.policy, fitted_on, cal.guarantee["eps"], cal.guarantee["delta"]), None
    return fit(run, cal.policy, fitted_on, cal.target_time_pct, cal.max_drop, None), None


def warn_collapse(where: str, logits: np.ndarray, labels: np.ndarray, spec: TaskSpec,
                  layers: set[int] | None = None) -> list[dict]:
    """Warn (and return) the exits whose predictions collapsed to one class (BERTer §5.1 on its
    paraphrase head: "all predictions were made to be 0"); regression tasks: constant predictions.
    ``layers``: only these exits (1-based; e.g. the heads the stage just trained: DeeBERT's stage 1
    trains the last one)."""
    found = [f for f in collapse(logits, labels, spec.is_regression) if layers is None or f["layer"] in layers]
    if found:
        w = found[-1]  # the deepest: the one a reader of the last exit cares about
        what = (f"exit {w['layer']} predicts class {w['class']} ({spec.labels[w['class']]}) for {w['share']:.1%} "
                f"of examples (labels: {w['label_share']:.1%})" if not spec.is_regression
                else f"exit {w['layer']} predicts a constant")
        layers = ", ".join(str(x["layer"]) for x in found)
        console.print(f"[yellow]warning:[/] {where}: predictions collapsed at exit(s) {layers}; {what}")
    return found
