"""`eebench calibrate`: fit an exit policy's setting on one split to a target (the sweep maths is
eebench.calibration), save it as calibration/<policy>.json, and apply a calibration to a split
(its operating point, per-example exits, MACs and, on a GLUE test split, the submission file)."""

from __future__ import annotations

import numpy as np

from eebench.console import console
from eebench.data.tasks import TaskSpec
from eebench.errors import UserError
from eebench.io import read_json, write_csv
from eebench.calibration import choose, per_example, row_setting, sweep, to_settings
from eebench.metrics import layerwise
from eebench.pipeline.trace import ensure_trace
from eebench.policies import exit_summary, get_policy, setting_label
from eebench.run.folder import Run
from eebench.trace_data import Trace
from eebench.guarantee import lt_test, per_example_losses
from eebench.intervals import described, point_intervals
from eebench.run.records import Calibration, OperatingPoint


def check_target(target_time_pct: float | None, max_drop: float | None, guarantee: float | None) -> None:
    """At most one of the three targets, and a time% target in (0, 100]."""
    if sum(x is not None for x in (target_time_pct, max_drop, guarantee)) > 1:
        raise UserError("give only one of --target-time-pct, --max-drop and --guarantee")
    if target_time_pct is not None and not 0 < target_time_pct <= 100:
        raise UserError(f"--target-time-pct {target_time_pct:g}: must be in (0, 100]")


def recipe_target(run: Run, target_time_pct: float | None, max_drop: float | None,
                  guarantee: float | None) -> tuple[float | None, float | None]:
    """The target given, or with none the recipe's exit.target_time_pct / exit.max_drop (said aloud)."""
    if target_time_pct is not None or max_drop is not None or guarantee is not None:
        return target_time_pct, max_drop
    target_time_pct, max_drop = run.recipe.exit.target_time_pct, run.recipe.exit.max_drop
    if target_time_pct is not None or max_drop is not None:
        console.print("no target given: the recipe's exit."
                      + (f"target_time_pct = {target_time_pct:g}" if target_time_pct is not None
                         else f"max_drop = {max_drop:g}"))
    return target_time_pct, max_drop


def parse_grid(text: str | None) -> list[float] | None:
    """``--grid 0,0.05,0.1``: the values of the policy's parameter to sweep."""
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--grid {text!r}: expected comma-separated numbers, e.g. 0,0.05,0.1") from None


def calibrate(run: Run, policy_name: str, split: str, target_time_pct: float | None = None,
              max_drop: float | None = None, grid: list | None = None, model=None, device: str | None = None,
              bootstrap: int | None = None, guarantee: tuple[float, float] | None = None) -> dict:
    """Fit the policy's setting on ``split`` to the target (or with a guarantee: (eps, delta)), save it,
    apply it to the split (tracing it first on ``device`` when no stored trace matches)."""
    trace = ensure_trace(run, split, model, device=device)
    cal = (fit_guarantee(run, policy_name, trace, *guarantee) if guarantee is not None
           else fit(run, policy_name, trace, target_time_pct, max_drop, grid))
    return apply_calibration(run, trace, cal, bootstrap=bootstrap).dump()


def fit(run: Run, policy_name: str, trace: Trace, target_time_pct: float | None, max_drop: float | None,
        grid: list | None) -> Calibration:
    policy = get_policy(policy_name)
    if trace.labels is None and max_drop is not None:
        raise UserError(f"split {trace.split!r} has no labels: --max-drop needs a labelled split (e.g. dev)")
    settings = sweep_grid(run, policy, trace, grid) + policy.fine_grid(trace)
    table = sweep(trace, run.spec, policy, settings)
    metric = run.spec.primary_metric
    if trace.labels is None:
        final, table[metric] = float("nan"), 0.0  # unlabelled: only time% can be targeted
    else:
        final = _last_exit_metric(run, trace)
    best = choose(table, metric, final, target_time_pct, max_drop)
    cal = Calibration(policy=policy_name, setting=row_setting(best, policy), split=trace.split,
                      target_time_pct=target_time_pct, max_drop=max_drop, metric=metric,
                      last_exit_metric=final, trace_key=trace.key)
    path = run.calibration_path(policy_name)
    previous = Calibration.load(path, run.dir) if path.is_file() else None
    cal.save(path)
    if previous is not None and previous.setting != cal.setting:
        console.print(f"replaced {path}: it held {setting_label(previous.setting)} (fitted on {previous.split})")
    write_csv(run.dir / "calibration" / f"{run.calibration_path(policy_name).stem}_sweep_{trace.split}.csv", table)
    console.print(f"calibrated {policy_name} on {run.split_name(trace.split)}: {setting_label(cal.setting)}")
    return cal


def fit_guarantee(run: Run, policy_name: str, trace: Trace, eps: float, delta: float) -> Calibration:
    """Learn-then-Test on ``trace`` (eebench.guarantee): the most aggressive setting whose disagreement with
    the full model is ≤ eps with probability ≥ 1 − delta; saved with the guarantee it carries."""
    policy = get_policy(policy_name)
    policy.check(trace)
    found = lt_test(trace, policy, eps, delta)
    risk = "prediction differs from the last exit's" if not trace.regression else \
        "|prediction − the last exit's| / label span, capped at 1"
    if found["chosen"] is None:
        raise UserError(f"no {policy_name} setting keeps the disagreement with the full model ≤ {eps:g} with "
                        f"probability ≥ {1 - delta:g} on {trace.split} ({found['n']} examples; the most "
                        f"conservative has empirical risk {found['risk'][0]:.4f}, p = {found['p'][0]:.3g}): raise "
                        f"--guarantee or --delta, or calibrate on a larger split")
    k, point = found["chosen"], found["point_estimate"]
    record = {"eps": eps, "delta": delta, "risk": risk, "n": found["n"], "empirical_risk": float(found["risk"][k]),
              "p_value": float(found["p"][k]), "time_pct": float(found["time_pct"][k]),
              "method": "Learn-then-Test, fixed-sequence over the policy's ordered settings, "
                        + ("exact binomial" if not trace.regression else "Hoeffding-Bentkus") + " p-values",
              "point_estimate_setting": found["settings"][point] if point is not None else None,
              "point_estimate_time_pct": float(found["time_pct"][point]) if point is not None else None}
    cal = Calibration(policy=policy_name, setting=found["settings"][k], split=trace.split, trace_key=trace.key,
                      guarantee=record)
    cal.save(run.calibration_path(policy_name))
    gives_up = "" if point is None else (f"; the point estimate ({setting_label(record['point_estimate_setting'])}) "
                                         f"runs {record['point_estimate_time_pct']:.1f} time% with no guarantee: "
                                         f"{record['time_pct'] - record['point_estimate_time_pct']:.1f} points given up")
    console.print(f"guaranteed {policy_name} on {run.split_name(trace.split)}: {setting_label(cal.setting)}: "
                  f"disagreement with the full model <= {eps:g} with probability >= {1 - delta:g} "
                  f"(n = {found['n']}, empirical {record['empirical_risk']:.4f}, p = {record['p_value']:.3g}); "
                  f"time% {record['time_pct']:.1f}{gives_up}")
    return cal


def apply_calibration(run: Run, trace: Trace, cal: Calibration, stale: str | None = None,
                      bootstrap: int | None = None) -> OperatingPoint:
    """The calibration's setting applied to ``trace``: the operating point (metrics, time%, their
    bootstrap intervals, MACs) saved as eval/<split>/operating_<policy>.json."""
    policy = get_policy(cal.policy)
    resamples = run.recipe.output.bootstrap if bootstrap is None else bootstrap
    layers = policy.exits(trace, [cal.setting])[0]
    frame = per_example(trace, layers)
    out = run.eval_dir(trace.split)
    write_csv(out / f"exits_{policy.name}.csv", frame)
    point = {"policy": policy.name, "setting": cal.setting, "calibrated_on": cal.split,
             **exit_summary(layers, trace.num_layers), **_macs(run, trace, layers),
             "trace_key": trace.key, "calibration_key": cal.trace_key, "stale": stale}
    if trace.labels is not None:
        row = sweep(trace, run.spec, policy, [cal.setting]).iloc[0]
        point.update({m: float(row[m]) for m in run.spec.metrics})
    if resamples:
        point.update(intervals=point_intervals(trace, layers, run.spec.metrics, resamples),
                     bootstrap=described(resamples))
    if trace.split != cal.split:
        point["transfer"] = transfer(run, cal, point, trace, layers)
    from eebench.report.submission import write_submission

    written = write_submission(out / f"glue_{policy.name}", run.spec, trace, layers)
    if written is not None:  # a GLUE test split: the file the GLUE server takes, at this operating point
        point["submission"] = str(written.relative_to(run.dir))
        console.print(f"GLUE submission file: {written}")
    record = OperatingPoint.model_validate(point)
    record.save(out / f"operating_{policy.name}.json")
    _print_point(run.split_name(trace.split), point, run.spec)
    if stale:
        console.print(f"[yellow]warning:[/] calibration {cal.policy} is stale: {stale}")
    return record


def sweep_grid(run: Run, policy, trace: Trace, grid=None) -> list[dict]:
    if grid is None and policy.name == run.recipe.exit.policy and run.recipe.exit.grid:
        grid = run.recipe.exit.grid
    return to_settings(policy, grid) if grid else policy.default_grid(trace.num_layers, trace.regression)


def _macs(run: Run, trace: Trace, layers: np.ndarray) -> dict:
    """Analytic MACs/FLOPs per example at these exits (eebench.maths.flops), from the backbone's config
    and its family's layer formula (eebench.model.families)."""
    config_path = run.model_dir / "config.json"
    if trace.tokens is None or not config_path.is_file():
        return {}
    from eebench.maths.flops import exit_macs
    from eebench.model.families import family_of

    config = _config_object(run.model_dir)
    family = family_of(config)
    if family is not None:
        hidden = family.hidden_size(config)
        return exit_macs(layers, trace.tokens, trace.num_layers, hidden, 0, trace.logits.shape[-1],
                         per_layer=family.layer_macs(config, trace.tokens))
    config = read_json(config_path)
    hidden = config.get("hidden_size") or config.get("dim")
    inter = config.get("intermediate_size") or config.get("hidden_dim")
    if not (hidden and inter):
        return {}
    return exit_macs(layers, trace.tokens, trace.num_layers, hidden, inter, trace.logits.shape[-1])


def transfer(run: Run, cal: Calibration, point: dict, trace: Trace, layers: np.ndarray) -> dict | None:
    """How a setting calibrated on ``cal.split`` did on this split: each number against the calibration
    split's value and interval (its stored operating point), flagged when it falls outside; with a
    guarantee, the disagreement realised here against eps."""
    path = run.eval_dir(cal.split) / f"operating_{cal.policy}.json"
    fitted = OperatingPoint.load(path, run.dir, cal.split).dump() if path.is_file() else None
    out: dict = {"calibrated_on": cal.split, "target_time_pct": cal.target_time_pct, "max_drop": cal.max_drop}
    flagged = []
    for name in ["time_pct", *[m for m in run.spec.metrics if m in point]]:
        interval = (fitted or {}).get("intervals", {}).get(name)
        if fitted is None or name not in fitted or not interval or None in interval:
            continue
        outside = not interval[0] <= point[name] <= interval[1]
        out[name] = {"calibration": fitted[name], "interval": interval, "realised": point[name], "outside": outside}
        if outside:
            flagged.append(f"{name} {point[name]:.1f} outside [{interval[0]:.1f}, {interval[1]:.1f}]")
    if cal.guarantee is not None:
        realised = float(per_example_losses(trace, layers[None, :]).mean())
        out["guarantee"] = {"eps": cal.guarantee["eps"], "realised_risk": realised,
                            "outside": realised > cal.guarantee["eps"]}
        if realised > cal.guarantee["eps"]:
            flagged.append(f"disagreement {realised:.4f} > eps {cal.guarantee['eps']:g}")
    if flagged:
        console.print(f"[yellow]transfer:[/] {cal.policy} calibrated on {cal.split}, on {trace.split}: "
                      + "; ".join(flagged), highlight=False, soft_wrap=True)
    return out


def _print_point(split: str, point: dict, spec: TaskSpec) -> None:
    m = spec.primary_metric
    metric = f"{m} {point[m]:.2f}, " if m in point else ""
    console.print(f"{split} @ {point['policy']} ({setting_label(point['setting'])}): {metric}"
                  f"time% {point['time_pct']:.1f}, speed-up {point['speedup']:.2f}x")


def _last_exit_metric(run: Run, trace: Trace) -> float:
    rows = layerwise((run.spec.primary_metric,), trace.logits[:, -1:], trace.labels, trace.regression)
    return float(rows[0][run.spec.primary_metric])


def _config_object(folder):
    """The backbone's transformers config from a run's model folder (None for a remote-code config)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError):
        return None
