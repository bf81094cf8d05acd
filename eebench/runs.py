"""The pipeline over a run folder: finetune → trace/evaluate → calibrate; the CLI calls these.

Run folder layout (docs/run-folder.md):
    recipe.toml, recipe.json   the recipe as given and as resolved (after --set)
    status.json                what finished, with timings
    train_log.jsonl            step losses and per-epoch summaries
    model/                     weights (safetensors), backbone config, tokenizer, exits.json
    traces/<split>.npz         all exits' logits per example, keyed (see eebench.trace)
    eval/<split>/              layerwise.{json,csv}, sweep_<policy>.csv, exits_<policy>.csv,
                               operating_<policy>.json
    calibration/<policy>.json  the chosen setting, its target and the split it was fit on
    report/                    tables (md, tex, csv) and figures (png, pdf)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eebench.calibrate import choose, per_example, row_setting, sweep, to_settings
from eebench.console import console, progress
from eebench.data.load import load_split
from eebench.data.tasks import TaskSpec, get_task
from eebench.errors import UserError
from eebench.io import atomic_write, read_json, write_json
from eebench.metrics import layerwise
from eebench.policies import exit_summary, get_policy, setting_label
from eebench.recipe import Recipe, load_recipe, validate_recipe
from eebench.trace import Trace, compute_logits, compute_signals, load_trace, save_trace, stored_key, trace_key


@dataclass
class Run:
    dir: Path
    recipe: Recipe

    @property
    def spec(self) -> TaskSpec:
        return get_task(self.recipe.task.name)

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    def trace_path(self, split: str) -> Path:
        return self.dir / "traces" / f"{split}.npz"

    def eval_dir(self, split: str) -> Path:
        return self.dir / "eval" / split

    def calibration_path(self, policy: str) -> Path:
        return self.dir / "calibration" / f"{policy}.json"

    def calibrations(self) -> list[dict]:
        return [with_setting(read_json(p)) for p in sorted((self.dir / "calibration").glob("*.json"))]

    def mark(self, **fields) -> None:
        path = self.dir / "status.json"
        status = read_json(path) if path.is_file() else {}
        status.update(fields)
        write_json(path, status)


def with_setting(record: dict) -> dict:
    """Calibration / operating-point records of early runs stored a bare ``threshold``."""
    if "setting" not in record and "threshold" in record:
        record = {**record, "setting": {"threshold": record["threshold"]}}
    return record


def open_run(path: str | Path, data_dir: str | None = None) -> Run:
    folder = Path(path)
    if not (folder / "recipe.json").is_file():
        raise UserError(f"{folder} is not a run folder (no recipe.json); runs are written by "
                        f"eebench finetune to results/<run-name>/")
    recipe = validate_recipe(read_json(folder / "recipe.json"), source=str(folder / "recipe.json"))
    if data_dir:
        recipe.task.data_dir = data_dir
    return Run(folder, recipe)


# ----------------------------------------------------------------------------------- finetune
def finetune(recipe_path: str | Path, overrides: list[str], data_dir: str | None = None,
             overwrite: bool = False) -> Run:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from eebench.data.encode import encode, eval_loader
    from eebench.model.build import build_model, build_tokenizer, save_model
    from eebench.train.loop import train
    from eebench.train.strategies import NEEDS_DEV_METRICS, NEEDS_LTE_HEAD, build_stages

    if data_dir:
        overrides = [*overrides, f"task.data_dir={json.dumps(str(data_dir))}"]
    recipe = load_recipe(recipe_path, overrides)
    run = Run(recipe.run_dir(Path(recipe_path).stem), recipe)
    spec = run.spec
    if (run.dir / "recipe.json").exists() and not overwrite:
        raise UserError(f"{run.dir} already holds a run; pass --overwrite to replace it, or pick "
                        f"another name with --set output.run_name=NAME")
    # Everything that can fail on bad input (data, tokenizer, model) happens before the run folder
    # is touched, so a mistake never leaves a half-made run behind.
    train_examples = load_split(spec, recipe.task, "train")
    dev_examples = _maybe_dev(run)
    set_seed(recipe.train.seed)
    with tempfile.TemporaryDirectory() as tmp:
        task_tokenizer = None
        if spec.name == "synthetic":
            from eebench.data.synthetic import build_tokenizer as synthetic_tokenizer

            task_tokenizer = synthetic_tokenizer(Path(tmp))
        tokenizer = build_tokenizer(recipe.model, task_tokenizer)
    if recipe.train.strategy in NEEDS_DEV_METRICS and (dev_examples is None or dev_examples.labels is None):
        raise UserError(f"{recipe_path}: train.strategy = {recipe.train.strategy!r} chooses each epoch's "
                        f"objective from dev metrics; keep train.eval_each_epoch = true and a labelled dev split")
    model = build_model(recipe.model, spec.num_labels, lte=recipe.train.strategy in NEEDS_LTE_HEAD)
    stages = build_stages(recipe.train, spec.name, model.num_layers)
    _prepare_run_dir(run, Path(recipe_path), overwrite)
    console.print(f"[bold]eebench finetune[/] {recipe_path} → {run.dir}")
    accelerator = Accelerator(mixed_precision=recipe.train.mixed_precision,
                              cpu=not torch.cuda.is_available())
    train_data = encode(tokenizer, train_examples, recipe.train.max_length)
    dev_data = encode(tokenizer, dev_examples, recipe.train.max_length) if dev_examples else None
    console.print(f"task {spec.name}: {len(train_examples)} train, "
                  f"{len(dev_examples) if dev_examples else 0} dev examples; model {recipe.model.name} "
                  f"({model.num_layers} layers, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
                  f"parameters) on {accelerator.device}")
    meta = {"task": spec.name, "labels": list(spec.labels or []), "model_name": recipe.model.name}

    def on_epoch_end(stage: str, epoch: int) -> dict:
        inner = accelerator.unwrap_model(model)
        save_model(inner, tokenizer, run.model_dir, {**meta, "stage": stage, "epoch": epoch})
        if not (recipe.train.eval_each_epoch and dev_data is not None and dev_examples.labels is not None):
            return {}
        logits = compute_logits(inner, eval_loader(dev_data, recipe.train.eval_batch_size), accelerator.device)
        rows = layerwise((spec.primary_metric,), logits, dev_examples.labels, spec.is_regression)
        return {"dev_metric": spec.primary_metric, "dev_layerwise": [r[spec.primary_metric] for r in rows]}

    started = time.perf_counter()
    run.mark(state="training", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    history = train(model, stages, train_data, recipe.train, spec.is_regression,
                    accelerator, run.dir / "train_log.jsonl", on_epoch_end)
    inner = accelerator.unwrap_model(model)
    if not history:  # zero epochs: still save the (untrained) model so the rest of the path runs
        save_model(inner, tokenizer, run.model_dir, {**meta, "stage": None, "epoch": 0})
    _stamp_weights(run)
    train_seconds = time.perf_counter() - started
    run.mark(state="trained", train_seconds=round(train_seconds, 1))
    console.print(f"trained in {train_seconds:.1f} s; model saved to {run.model_dir}")

    ex = recipe.exit
    splits = list(recipe.output.evaluate_splits)
    if recipe.output.calibrate and (ex.target_time_pct is not None or ex.max_drop is not None):
        # calibrate first, so evaluating the other splits applies the new setting
        evaluate(run, ex.calibrate_split, model=inner)
        calibrate(run, ex.policy, ex.calibrate_split, ex.target_time_pct, ex.max_drop, model=inner)
        splits = [s for s in splits if s != ex.calibrate_split]
    for split in splits:
        evaluate(run, split, model=inner)
    if recipe.output.report:
        from eebench.report.run_report import report_run

        report_run(run)
    run.mark(state="done", total_seconds=round(time.perf_counter() - started, 1))
    return run


def _prepare_run_dir(run: Run, recipe_path: Path, overwrite: bool) -> None:
    if (run.dir / "recipe.json").exists() and overwrite:
        shutil.rmtree(run.dir)
    run.dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe_path, run.dir / "recipe.toml")
    write_json(run.dir / "recipe.json", run.recipe.model_dump(mode="json"))


def _maybe_dev(run: Run):
    if not run.recipe.train.eval_each_epoch or "dev" not in run.spec.splits:
        return None
    try:
        return load_split(run.spec, run.recipe.task, "dev")
    except UserError as err:
        console.print(f"[yellow]no per-epoch dev metrics:[/] {err}")
        return None


def _stamp_weights(run: Run) -> str:
    """Record the weights' sha256 in exits.json: part of every trace key."""
    h = hashlib.sha256()
    with open(run.model_dir / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    meta = read_json(run.model_dir / "exits.json")
    meta["weights_sha256"] = h.hexdigest()
    write_json(run.model_dir / "exits.json", meta)
    return meta["weights_sha256"]


# ----------------------------------------------------------------------------------- trace
def ensure_trace(run: Run, split: str, model=None) -> Trace:
    """The stored trace of ``split`` when its key matches, else a fresh one (and say why)."""
    from eebench.data.encode import encode, eval_loader

    examples = load_split(run.spec, run.recipe.task, split)
    meta_path = run.model_dir / "exits.json"
    if not meta_path.is_file():
        raise UserError(f"{run.dir} has no trained model yet (model/exits.json missing); "
                        f"run eebench finetune to completion first")
    meta = read_json(meta_path)
    weights = meta.get("weights_sha256") or _stamp_weights(run)
    key = trace_key(weights, examples.fingerprint(), run.recipe.train.max_length)
    path = run.trace_path(split)
    old = stored_key(path)
    if old == key:
        return load_trace(path)
    if old is not None:
        console.print(f"[yellow]trace {path} is stale[/] (model, data or max_length changed); recomputing")
    from eebench.model.build import load_model

    if model is None:
        model, tokenizer, _ = load_model(run.model_dir)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(run.model_dir))
    device = next(model.parameters()).device
    data = encode(tokenizer, examples, run.recipe.train.max_length)
    with progress() as bars:
        task = bars.add_task(f"trace {split}", total=len(data), info="")
        signals = compute_signals(model, eval_loader(data, run.recipe.train.eval_batch_size), device,
                                  bars, task)
    trace = Trace(split, key, np.asarray(examples.ids), signals["logits"], examples.labels,
                  run.spec.is_regression, signals["lte"], signals["cka"], data.lengths())
    save_trace(path, trace)
    return trace


# ----------------------------------------------------------------------------------- evaluate
def evaluate(run: Run, split: str, model=None) -> dict:
    """Trace ``split`` (or reuse its trace), write layer-wise metrics, the recipe policy's sweep and
    every saved calibration applied to this split."""
    trace = ensure_trace(run, split, model)
    spec, out = run.spec, run.eval_dir(split)
    result: dict = {"split": split, "n": len(trace.ids)}
    if trace.labels is not None:
        rows = layerwise(spec.metrics, trace.logits, trace.labels, trace.regression)
        write_json(out / "layerwise.json", rows)
        _write_csv(out / "layerwise.csv", pd.DataFrame(rows))
        result["layerwise"] = rows
        m = spec.primary_metric
        console.print(f"{split}: {m} per exit " + " ".join(f"{r[m]:.1f}" for r in rows))
    policy = get_policy(run.recipe.exit.policy)
    if not policy.needs or getattr(trace, policy.needs) is not None:
        table = sweep(trace, spec, policy, _grid(run, policy, trace))
        _write_csv(out / f"sweep_{policy.name}.csv", table)
    for cal in run.calibrations():
        result[cal["policy"]] = apply_calibration(run, trace, cal)
    return result


def _grid(run: Run, policy, trace: Trace, grid=None) -> list[dict]:
    if grid is None and policy.name == run.recipe.exit.policy and run.recipe.exit.grid:
        grid = run.recipe.exit.grid
    return to_settings(policy, grid) if grid else policy.default_grid(trace.num_layers)


def apply_calibration(run: Run, trace: Trace, cal: dict) -> dict:
    policy = get_policy(cal["policy"])
    layers = policy.exits(trace, [cal["setting"]])[0]
    frame = per_example(trace, layers)
    out = run.eval_dir(trace.split)
    _write_csv(out / f"exits_{policy.name}.csv", frame)
    point = {"policy": policy.name, "setting": cal["setting"], "calibrated_on": cal["split"],
             **exit_summary(layers, trace.num_layers), **_macs(run, trace, layers)}
    if trace.labels is not None:
        row = sweep(trace, run.spec, policy, [cal["setting"]]).iloc[0]
        point.update({m: float(row[m]) for m in run.spec.metrics})
    write_json(out / f"operating_{policy.name}.json", point)
    _print_point(trace.split, point, run.spec)
    return point


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
              max_drop: float | None = None, grid: list | None = None, model=None) -> dict:
    policy = get_policy(policy_name)
    trace = ensure_trace(run, split, model)
    if trace.labels is None and max_drop is not None:
        raise UserError(f"split {split!r} has no labels: --max-drop needs a labelled split (e.g. dev)")
    settings = _grid(run, policy, trace, grid) + policy.fine_grid(trace)
    table = sweep(trace, run.spec, policy, settings)
    metric = run.spec.primary_metric
    if trace.labels is None:
        final, table[metric] = float("nan"), 0.0  # unlabelled: only time% can be targeted
    else:
        final = _last_exit_metric(run, trace)
    best = choose(table, metric, final, target_time_pct, max_drop)
    cal = {"policy": policy_name, "setting": row_setting(best, policy), "split": split,
           "target_time_pct": target_time_pct, "max_drop": max_drop, "metric": metric,
           "last_exit_metric": final, "trace_key": trace.key}
    write_json(run.calibration_path(policy_name), cal)
    _write_csv(run.dir / "calibration" / f"{policy_name}_sweep_{split}.csv", table)
    console.print(f"calibrated {policy_name} on {split}: {setting_label(cal['setting'])}")
    return apply_calibration(run, trace, cal)


def _last_exit_metric(run: Run, trace: Trace) -> float:
    rows = layerwise((run.spec.primary_metric,), trace.logits[:, -1:], trace.labels, trace.regression)
    return float(rows[0][run.spec.primary_metric])


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda p: frame.to_csv(p, index=False, float_format="%.6g"))

