"""Trace a split, evaluate it (layer-wise metrics, the recipe policy's sweep, every calibration applied)
and calibrate an exit policy on it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from eebench.calibrate import choose, per_example, row_setting, sweep, to_settings
from eebench.console import console, progress
from eebench.data.load import load_split
from eebench.data.tasks import TaskSpec
from eebench.errors import UserError
from eebench.io import atomic_write, read_json, write_json
from eebench.metrics import collapse, layerwise
from eebench.policies import exit_summary, get_policy, setting_label
from eebench.recipe import Recipe
from eebench.rundir import Calibration, Layerwise, OperatingPoint, Run
from eebench.trace import Trace, compute_signals, load_trace, save_trace, stored_key, trace_key


def encode_split(recipe: Recipe, tokenizer, examples):
    """Tokenize a split as the recipe says (pair input mode; segment ids for cosine pair heads)."""
    from eebench.data.encode import encode

    return encode(tokenizer, examples, recipe.train.max_length, recipe.model.pair_input,
                  segments=recipe.task.pair_loss == "cosine")


def stamp_weights(run: Run) -> str:
    """Record the weights' sha256 in exits.json: part of every trace key."""
    h = hashlib.sha256()
    with open(run.model_dir / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    meta = read_json(run.model_dir / "exits.json")
    meta["weights_sha256"] = h.hexdigest()
    write_json(run.model_dir / "exits.json", meta)
    return meta["weights_sha256"]


def current_key(run: Run, fingerprint: str) -> str:
    """The key a trace made now of the examples with this fingerprint would have (the model's
    weights, the examples and the tokenization settings)."""
    meta_path = run.model_dir / "exits.json"
    if not meta_path.is_file():
        raise UserError(f"{run.dir} has no trained model yet (model/exits.json missing); "
                        f"run eebench finetune to completion first")
    try:
        meta = read_json(meta_path)
    except ValueError:
        raise UserError(f"{meta_path} is unreadable; the model folder is damaged: redo the run with "
                        f"eebench finetune RECIPE --overwrite") from None
    weights = meta.get("weights_sha256") or stamp_weights(run)
    return trace_key(weights, fingerprint, run.recipe.train.max_length, _input_mode(run.recipe))


def ensure_trace(run: Run, split: str, model=None, parallel=None, retrace: bool = False,
                 device: str | None = None) -> Trace:
    """The stored trace of ``split`` when its key matches, else a fresh one (and say why). With
    ``parallel`` every process traces its share of the batches and the main process saves the whole.
    ``retrace`` recomputes it whatever is stored (a damaged trace file). A model loaded here runs on
    ``device`` (eebench.device's rule: the accelerator when there is one), in the recipe's precision
    on a GPU; a model passed in runs where it is."""
    from eebench.data.encode import eval_loader

    path = run.trace_path(split)
    examples = _examples_or_stored(run, split, path, retrace)
    if isinstance(examples, Trace):
        return examples
    fingerprint = examples.fingerprint()  # one pass over the texts, shared by what follows
    key = current_key(run, fingerprint)
    old = None if retrace else stored_key(path)
    if old == key:
        _record_split(run, split, examples, fingerprint, parallel)
        return load_trace(path)
    if old is not None and model is None:  # results of a finished run: never replaced unasked
        raise UserError(f"{path} was made from {_what_changed(run, split, examples, fingerprint)} than there is now; its "
                        f"results and calibrations are kept: restore that data, or replace them with "
                        f"eebench evaluate {run.shown()} --split {split} --retrace")
    if old is not None:
        console.print(f"[yellow]trace {path} is stale[/] (model, data or max_length changed); recomputing")
    _record_split(run, split, examples, fingerprint, parallel)
    from eebench.model.build import load_model

    from eebench.device import describe, inference_dtype, resolve_device

    if model is None:
        target = resolve_device(device)
        model, tokenizer, _ = load_model(run.model_dir, run.model_task)
        model.to(target)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(run.model_dir))
    on = next(model.parameters()).device
    dtype = inference_dtype(on, run.recipe.train.mixed_precision)
    where = " ".join(describe(on).values())
    data = encode_split(run.recipe, tokenizer, examples)
    with progress() as bars:
        task = bars.add_task(f"trace {split} on {on}", total=len(data), info="")
        signals = compute_signals(model, eval_loader(data, run.recipe.train.eval_batch_size, on), on,
                                  bars, task, parallel=parallel, dtype=dtype)
    trace = Trace(split, key, np.asarray(examples.ids), signals["logits"], examples.labels,
                  run.spec.is_regression, signals["lte"], signals["cka"], data.lengths(),
                  device=where + (f" {str(dtype).removeprefix('torch.')}" if dtype else ""))
    if parallel is None or parallel.is_main:
        save_trace(path, trace)
    return trace


def _examples_or_stored(run: Run, split: str, path: Path, retrace: bool):
    """The split's examples; when its files cannot be found, the stored trace made from the very
    examples the run recorded (its fingerprint gives the trace's key without the files)."""
    from eebench.errors import MissingData
    from eebench.rundir import run_status

    try:
        return load_split(run.spec, run.recipe.task, split)
    except MissingData as err:
        recorded = run_status(run.dir).data.get(split) if run.data_name is None else None
        if retrace or recorded is None or not path.is_file():
            raise
        if stored_key(path) != current_key(run, recorded["fingerprint"]):
            raise
        console.print(f"note: split {split} not found ({str(err).split(';')[0]}); its stored trace is of the data "
                      f"the run recorded ({recorded['source']}): using it", soft_wrap=True)
        return load_trace(path)


def _record_split(run: Run, split: str, examples, fingerprint: str, parallel) -> None:
    """Note in status.json where the split was read from and its fingerprint (the run's own data)."""
    from eebench.rundir import run_status

    if run.data_name is None and (parallel is None or parallel.is_main) and (run.dir / "status.json").is_file():
        status = run_status(run.dir)
        if status.data.get(split, {}).get("fingerprint") != fingerprint:
            run.mark(data=status.record_split(split, examples, fingerprint))


def _what_changed(run: Run, split: str, examples, fingerprint: str) -> str:
    from eebench.rundir import run_status

    recorded = run_status(run.dir).data.get(split)
    if recorded is None:
        return "another model, data or max_length"
    if recorded["fingerprint"] != fingerprint:
        return (f"other data ({recorded['n']} examples from {recorded['source']}; now {len(examples)} from "
                f"{examples.source})")
    return "another model or max_length"


def _input_mode(recipe: Recipe) -> str:
    """What besides max_length decides the tokens: empty for the default (keeps older trace keys)."""
    parts = [p for p in (recipe.model.pair_input if recipe.model.pair_input != "concat" else "",
                         "segments" if recipe.task.pair_loss == "cosine" else "") if p]
    return "|".join(parts)


# ----------------------------------------------------------------------------------- evaluate
def evaluate(run: Run, split: str, model=None, retrace: bool = False, device: str | None = None) -> dict:
    """Trace ``split`` (or reuse its trace), write layer-wise metrics, the recipe policy's sweep and
    every saved calibration applied to this split (refitted first when the model or data changed
    since it was fitted and its split is at hand)."""
    calibrations = run.calibrations()  # read (and checked) before anything is written
    trace = ensure_trace(run, split, model, retrace=retrace, device=device)
    spec, out = run.spec, run.eval_dir(split)
    result: dict = {"split": run.split_name(split), "n": len(trace.ids), "traced_on": trace.device}
    if trace.labels is not None:
        rows = layerwise(spec.metrics, trace.logits, trace.labels, trace.regression)
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
        table = sweep(trace, spec, policy, _grid(run, policy, trace))
        write_csv(out / f"sweep_{policy.name}.csv", table)
    for cal in calibrations:
        cal, stale = _fresh(run, cal, split, trace, model, device)
        result[cal.policy] = apply_calibration(run, trace, cal, stale).dump()
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


def _grid(run: Run, policy, trace: Trace, grid=None) -> list[dict]:
    if grid is None and policy.name == run.recipe.exit.policy and run.recipe.exit.grid:
        grid = run.recipe.exit.grid
    return to_settings(policy, grid) if grid else policy.default_grid(trace.num_layers, trace.regression)


def apply_calibration(run: Run, trace: Trace, cal: Calibration, stale: str | None = None) -> OperatingPoint:
    policy = get_policy(cal.policy)
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


def _macs(run: Run, trace: Trace, layers: np.ndarray) -> dict:
    """Analytic MACs/FLOPs per example at these exits (eebench.flops), from the backbone's config."""
    config_path = run.model_dir / "config.json"
    if trace.tokens is None or not config_path.is_file():
        return {}
    config = read_json(config_path)
    hidden = config.get("hidden_size") or config.get("dim")
    inter = config.get("intermediate_size") or config.get("hidden_dim")
    if not (hidden and inter):
        return {}
    from eebench.flops import exit_macs

    return exit_macs(layers, trace.tokens, trace.num_layers, hidden, inter, trace.logits.shape[-1])


def _print_point(split: str, point: dict, spec: TaskSpec) -> None:
    m = spec.primary_metric
    metric = f"{m} {point[m]:.2f}, " if m in point else ""
    console.print(f"{split} @ {point['policy']} ({setting_label(point['setting'])}): {metric}"
                  f"time% {point['time_pct']:.1f}, speed-up {point['speedup']:.2f}x")


# ----------------------------------------------------------------------------------- calibrate
def calibrate(run: Run, policy_name: str, split: str, target_time_pct: float | None = None,
              max_drop: float | None = None, grid: list | None = None, model=None, device: str | None = None) -> dict:
    """Fit the policy's setting on ``split`` to the target, save it, apply it to the split (tracing it
    first on ``device`` when no stored trace matches)."""
    trace = ensure_trace(run, split, model, device=device)
    cal = fit(run, policy_name, trace, target_time_pct, max_drop, grid)
    return apply_calibration(run, trace, cal).dump()


def fit(run: Run, policy_name: str, trace: Trace, target_time_pct: float | None, max_drop: float | None,
        grid: list | None) -> Calibration:
    policy = get_policy(policy_name)
    if trace.labels is None and max_drop is not None:
        raise UserError(f"split {trace.split!r} has no labels: --max-drop needs a labelled split (e.g. dev)")
    settings = _grid(run, policy, trace, grid) + policy.fine_grid(trace)
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


def _last_exit_metric(run: Run, trace: Trace) -> float:
    rows = layerwise((run.spec.primary_metric,), trace.logits[:, -1:], trace.labels, trace.regression)
    return float(rows[0][run.spec.primary_metric])


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda p: frame.to_csv(p, index=False, float_format="%.6g"))

