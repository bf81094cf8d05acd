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

import contextlib
import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eebench.calibrate import choose, per_example, row_setting, sweep, to_settings
from eebench.console import console, progress
from rich.markup import escape
from eebench.data.load import load_split
from eebench.data.tasks import TaskSpec, get_task
from eebench.errors import UserError
from eebench.io import atomic_write, read_json, write_json
from eebench.metrics import collapse, layerwise
from eebench.policies import exit_summary, get_policy, setting_label
from eebench.recipe import Recipe, load_recipe, validate_recipe
from eebench.trace import Trace, compute_logits, compute_signals, load_trace, save_trace, stored_key, trace_key


MULTITASK_MARKER = "multitask.json"


@dataclass
class Run:
    dir: Path
    recipe: Recipe
    model_task: str | None = None
    """Set for one task of a multitask run (``<run>/tasks/<task>/``): the model is the shared one in
    ``<run>/model``, seen through this task's heads."""

    @property
    def spec(self) -> TaskSpec:
        return get_task(self.recipe.task.name)

    @property
    def model_dir(self) -> Path:
        return self.dir.parent.parent / "model" if self.model_task else self.dir / "model"

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
    if recipe.is_multitask:
        tasks = ", ".join(str(folder / "tasks" / t.name) for t in recipe.tasks)
        raise UserError(f"{folder} is a multitask run; each task is a run folder of its own: {tasks}")
    if data_dir:
        recipe.task.data_dir = data_dir
    marker = folder / MULTITASK_MARKER
    parent = folder.parent.parent if marker.is_file() else folder
    if training_unfinished(parent):
        status = run_status(parent)
        if owner_running(parent):
            raise UserError(f"{parent} is still training (another eebench process holds it); wait for it to finish")
        raise UserError(f"{parent} is an unfinished run (status {status.get('state')}: its training was killed "
                        f"or failed); continue it with eebench finetune RECIPE --resume (or eebench resume {parent})")
    return Run(folder, recipe, read_json(marker)["task"] if marker.is_file() else None)


def task_runs(folder: str | Path) -> list[Path]:
    """The run folders under ``folder``: itself, or for a multitask run its tasks' folders."""
    folder = Path(folder)
    recipe = read_json(folder / "recipe.json") if (folder / "recipe.json").is_file() else {}
    return [folder / "tasks" / t["name"] for t in recipe.get("tasks", [])] or [folder]


def encode_split(recipe: Recipe, tokenizer, examples):
    """Tokenize a split as the recipe says (pair input mode; segment ids for cosine pair heads)."""
    from eebench.data.encode import encode

    return encode(tokenizer, examples, recipe.train.max_length, recipe.model.pair_input,
                  segments=recipe.task.pair_loss == "cosine")


# ----------------------------------------------------------------------------------- finetune
FINISHED = ("finished", "done")  # "done": run folders written before resumable training


def run_status(folder: Path) -> dict:
    path = Path(folder) / "status.json"
    return read_json(path) if path.is_file() else {}


def training_unfinished(folder: Path) -> bool:
    """Training started in this folder and never completed (killed, failed, or still running)."""
    status = run_status(folder)
    return status.get("state") == "training" or (status.get("state") == "failed" and not status.get("trained"))


def finetune(recipe_path: str | Path, overrides: list[str], data_dir: str | None = None,
             overwrite: bool = False, resume: bool = False, recipe: Recipe | None = None,
             run_dir: Path | None = None) -> Run:
    """Train the recipe's model and evaluate it. A multitask recipe trains one shared model and
    leaves one run folder per task under ``<run>/tasks/<task>/`` (the returned run is the parent).

    Under ``accelerate launch`` / ``torchrun`` every process calls this: they train data-parallel
    (eebench.train.loop), and only the main process writes files, prints and evaluates.
    ``resume`` continues an unfinished run from its last checkpoint (or starts it when there is none)."""
    from eebench.train.parallel import Parallel

    recipe = recipe or load_recipe(recipe_path, overrides)
    if data_dir:
        for entry in recipe.tasks or [recipe.task]:
            entry.data_dir = str(data_dir)
    run = Run(Path(run_dir) if run_dir else recipe.run_dir(Path(recipe_path).stem), recipe)
    accelerator = _accelerator(recipe, run)
    par = Parallel.from_accelerator(accelerator)
    console.quiet = not par.is_main  # one writer: the main process prints
    with run_lock(run.dir, par):
        return _finetune(run, recipe_path, accelerator, par, overwrite, resume)


@contextlib.contextmanager
def run_lock(folder: Path, par=None):
    """Own the run folder for the duration (a lock file beside it, held by the main process): a
    second eebench writing the same run gets one line instead of two writers in one folder."""
    from filelock import FileLock, Timeout

    main = par is None or par.is_main
    lock = FileLock(str(lock_path(folder))) if main else None
    acquired = True
    if lock is not None:
        lock_path(folder).parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            acquired = False
    if par is not None and not par.from_main(acquired) or not acquired:
        raise UserError(f"{folder} is being written by another eebench process right now; wait for it to "
                        f"finish, or pick another name with --set output.run_name=NAME")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def lock_path(folder: Path) -> Path:
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def owner_running(folder: Path) -> bool:
    """Whether some process holds the run folder's lock now (a training run still going)."""
    from filelock import FileLock, Timeout

    if not lock_path(folder).is_file():
        return False
    try:
        FileLock(str(lock_path(folder))).acquire(timeout=0).lock.release()
    except Timeout:
        return True
    return False


def _finetune(run: Run, recipe_path, accelerator, par, overwrite: bool, resume: bool) -> Run:
    from accelerate.utils import set_seed

    from eebench.data.encode import eval_loader
    from eebench.model.build import build_model, build_multitask_model, build_tokenizer, save_model
    from eebench.train.loop import TaskJob, check_lockstep, checkpoint_dir, remove_checkpoint, train
    from eebench.train.strategies import build_stages, needs_lte_head

    recipe = run.recipe
    resume = _check_run_dir(run, recipe_path, overwrite, resume)
    if resume is None:  # finished already
        return run
    # Everything that can fail on bad input (data, tokenizer, model) happens before the run folder
    # is touched, so a mistake never leaves a half-made run behind.
    subs = ({t.name: Run(run.dir / "tasks" / t.name, recipe.task_recipe(t.name), t.name) for t in recipe.tasks}
            if recipe.is_multitask else {recipe.task.name: run})
    splits = {name: (load_split(sub.spec, sub.recipe.task, "train"), _maybe_dev(sub)) for name, sub in subs.items()}
    for name, sub in subs.items():
        _check_task_setup(recipe_path, sub, splits[name][1])
    set_seed(recipe.train.seed)
    with tempfile.TemporaryDirectory() as tmp:
        task_tokenizer = None
        if "synthetic" in subs:
            from eebench.data.synthetic import build_tokenizer as synthetic_tokenizer

            task_tokenizer = synthetic_tokenizer(Path(tmp))
        tokenizer = build_tokenizer(recipe.model, task_tokenizer)
    info = {name: {"num_labels": sub.spec.num_labels, "lte": needs_lte_head(sub.recipe.train),
                   "pair_cosine": sub.recipe.task.pair_loss == "cosine"} for name, sub in subs.items()}
    if recipe.is_multitask:
        model = build_multitask_model(recipe.model, info)
        views = {name: model.task(name) for name in subs}
    else:
        (name, i), = info.items()
        model = build_model(recipe.model, i["num_labels"], lte=i["lte"], pair_cosine=i["pair_cosine"])
        views = {name: model}
    par.broadcast_module_(model)  # every process starts from the main process's weights
    if par.rank > 0:
        set_seed(recipe.train.seed + par.rank)  # dropout differs across processes
    jobs = [TaskJob(name, views[name], build_stages(sub.recipe.train, name, model.num_layers),
                    encode_split(sub.recipe, tokenizer, splits[name][0]), sub.spec.is_regression,
                    sub.recipe.train.smart, sub.recipe.task.pair_loss) for name, sub in subs.items()]
    check_lockstep(jobs)
    par.barrier()  # every process has checked the run folder before the main process changes it
    if par.is_main:
        if not resume:
            _prepare_run_dir(run, Path(recipe_path), overwrite)
        _track(accelerator, run)
    par.barrier()
    checkpoint = checkpoint_dir(run.dir) if resume else None
    console.print(f"[bold]eebench finetune[/] {recipe_path} → {run.dir}"
                  + (f" (resuming from {checkpoint})" if checkpoint else " (no checkpoint yet: from the start)"
                     if resume else ""))
    devs = {name: (encode_split(subs[name].recipe, tokenizer, dev), dev.labels) for name, (_, dev) in splits.items()
            if dev is not None and dev.labels is not None and recipe.train.eval_each_epoch}
    for name, (train_examples, dev) in splits.items():
        console.print(f"task {name}: {len(train_examples)} train, {len(dev) if dev else 0} dev examples")
    from eebench.train.loop import global_batch_size

    console.print(f"model {recipe.model.name} ({model.num_layers} layers, "
                  f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters) on {accelerator.device}, "
                  f"{par.world} process{'es' * (par.world > 1)}, global batch "
                  f"{global_batch_size(recipe.train, par.world)}, mixed precision {accelerator.mixed_precision}")
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        console.print("[yellow]note:[/] fp16 autocast needs a GPU; this CPU run computes in fp32 (bf16 works on CPU)")
    meta = {"task": ",".join(subs), "labels": [] if recipe.is_multitask else list(run.spec.labels or []),
            "model_name": recipe.model.name}

    def on_epoch_end(stage: str, epoch: int) -> dict:
        if par.is_main:
            save_model(model, tokenizer, run.model_dir, {**meta, "stage": stage, "epoch": epoch})
        out = {}
        for name, (data, labels) in devs.items():
            spec = subs[name].spec
            logits = compute_logits(views[name], eval_loader(data, recipe.train.eval_batch_size), accelerator.device,
                                    par)
            rows = layerwise((spec.primary_metric,), logits, labels, spec.is_regression)
            out[name] = {"dev_metric": spec.primary_metric, "dev_layerwise": [r[spec.primary_metric] for r in rows]}
            warn_collapse(f"{name} dev after {stage} epoch {epoch}", logits, labels, spec)
        return {"tasks": out} if recipe.is_multitask else next(iter(out.values()), {})

    started = time.perf_counter()
    if par.is_main:
        previous = run_status(run.dir) if resume else {}
        run.mark(state="training", started=previous.get("started", time.strftime("%Y-%m-%dT%H:%M:%S")),
                 processes=par.world, mixed_precision=str(accelerator.mixed_precision),
                 global_batch=global_batch_size(recipe.train, par.world), **({"resumed": previous.get("resumed", 0) + 1} if checkpoint else {}))
    try:
        history = train(model, jobs, recipe.train, accelerator, run.dir / "train_log.jsonl", on_epoch_end,
                        run_dir=run.dir, resume=resume)
    except BaseException as err:
        if par.is_main:
            run.mark(state="failed", trained=False, error=_describe(err))
        raise
    if par.is_main and not history:  # zero epochs: still save the (untrained) model so the rest of the path runs
        save_model(model, tokenizer, run.model_dir, {**meta, "stage": None, "epoch": 0})
    train_seconds = time.perf_counter() - started
    if par.is_main:
        _stamp_weights(run)
        run.mark(state="trained", trained=True, train_seconds=round(train_seconds, 1))
        remove_checkpoint(run.dir)  # the model is saved: the training state is no longer needed
        console.print(f"trained in {train_seconds:.1f} s; model saved to {run.model_dir}")
    for tracker in accelerator.trackers:  # not end_training(): that also ends the process group
        tracker.finish()
    par.barrier()
    try:
        for name, sub in subs.items():
            if sub is not run and par.is_main:
                _prepare_task_run(sub, train_seconds)
            par.barrier()
            for split in _splits_after_training(sub):  # every process traces its share
                ensure_trace(sub, split, views[name], par)
            if par.is_main:
                _after_training(sub, views[name], started)
    except BaseException as err:
        if par.is_main:
            run.mark(state="failed", trained=True, error=_describe(err))
        raise
    if par.is_main:
        if recipe.is_multitask:
            run.mark(state="finished", total_seconds=round(time.perf_counter() - started, 1))
            console.print(f"tasks: {', '.join(str(sub.dir) for sub in subs.values())}")
    par.barrier()
    return run


def _describe(err: BaseException) -> str:
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    return f"{type(err).__name__}: {err}"[:500]


def _accelerator(recipe: Recipe, run: Run):
    """The Accelerator of a training run: mixed precision from the recipe, else from the launcher."""
    import torch
    from accelerate import Accelerator

    trackers = list(recipe.output.trackers)
    if trackers:
        from accelerate.tracking import get_available_trackers
        from accelerate.utils import LoggerType

        known, available = LoggerType.list(), [str(t) for t in get_available_trackers()]
        for name in trackers:
            if name not in known:
                raise UserError(f"output.trackers: unknown tracker {name!r}; choose from {', '.join(known)}")
            if name not in available:
                raise UserError(f"output.trackers: {name!r} is not installed; pip install it (e.g. pip install "
                                f"{'tensorboard' if name == 'tensorboard' else name}) or remove it from the recipe")
    try:
        return Accelerator(mixed_precision=recipe.train.mixed_precision, cpu=not torch.cuda.is_available(),
                           log_with=trackers or None, project_dir=str(run.dir / "tracking"))
    except (ValueError, ImportError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        what = "output.trackers" if trackers else "train.mixed_precision"
        raise UserError(f"{what}: {first}") from None


def _track(accelerator, run: Run) -> None:
    """Start the recipe's experiment trackers (no-op without output.trackers)."""
    if not run.recipe.output.trackers:
        return
    flat = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", run.recipe.model_dump(mode="json"))
    try:
        accelerator.init_trackers(run.dir.name, config=flat)
    except (ImportError, ModuleNotFoundError, ValueError) as err:
        raise UserError(f"output.trackers = {run.recipe.output.trackers}: {err}; install the tracker's package "
                        f"(e.g. pip install tensorboard) or remove it from the recipe") from None


def _check_run_dir(run: Run, recipe_path, overwrite: bool, resume: bool) -> bool | None:
    """What to do with the run folder: False start afresh, True resume, None nothing (finished)."""
    if overwrite and resume:
        raise UserError("give only one of --overwrite (start over) and --resume (continue)")
    if not (run.dir / "recipe.json").exists():
        return False  # nothing there: --resume starts the run (so a requeued job can always pass it)
    if overwrite:
        return False
    status = run_status(run.dir)
    if not training_unfinished(run.dir):
        if resume:
            state = status.get("state", "unknown")
            then = ("" if state in FINISHED else f"; its evaluation did not finish: run eebench evaluate {run.dir} "
                    f"(and calibrate / report) on it")
            console.print(f"{run.dir} is already trained (status {state}); nothing to resume{then}")
            return None
        raise UserError(f"{run.dir} already holds a run; pass --overwrite to replace it, or pick "
                        f"another name with --set output.run_name=NAME")
    from eebench.train.loop import checkpoint_position

    where = checkpoint_position(run.dir)
    at = (f"last checkpoint: stage {where.stage + 1}, epoch {where.epoch}, step {where.step}" if where
          else "no checkpoint yet")
    if not resume:
        raise UserError(f"{run.dir} holds an unfinished run (status {status.get('state')}, {at}); continue it with "
                        f"eebench finetune {recipe_path} --resume, or start over with --overwrite")
    stored = read_json(run.dir / "recipe.json")
    now = run.recipe.model_dump(mode="json", exclude={"task"} if run.recipe.is_multitask else None)
    if stored != now:
        keys = _differing_keys(stored, now)
        raise UserError(f"{run.dir}: the recipe differs from the one the run was started with "
                        f"({', '.join(keys[:5])}); resume with the same recipe and --set values, or start over "
                        f"with --overwrite")
    return True


def _differing_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differing_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [prefix or "(top level)"]


def _splits_after_training(run: Run) -> list[str]:
    ex, out = run.recipe.exit, run.recipe.output
    first = [ex.calibrate_split] if out.calibrate and (ex.target_time_pct is not None or ex.max_drop is not None) else []
    return list(dict.fromkeys(first + list(out.evaluate_splits)))


def _check_task_setup(recipe_path, run: Run, dev) -> None:
    from eebench.train.strategies import build_stages, needs_dev_metrics

    recipe, spec = run.recipe, run.spec
    if needs_dev_metrics(recipe.train) and (dev is None or dev.labels is None):
        raise UserError(f"{recipe_path}: train.strategy = {recipe.train.strategy!r} chooses each epoch's "
                        f"objective from dev metrics; keep train.eval_each_epoch = true and a labelled dev "
                        f"split for task {spec.name}")
    if recipe.task.pair_loss == "cosine":
        if spec.num_labels != 2 or _single_sentence(spec):
            raise UserError(f"{recipe_path}: pair_loss = \"cosine\" needs a binary sentence-pair task "
                            f"(e.g. quora, qqp, mrpc); {spec.name} is not one")
        if any(stage.gradient is not None or stage.parts is not None
               for stage in build_stages(recipe.train, spec.name, 2)):
            raise UserError(f"{recipe_path}: pair_loss = \"cosine\" works with loss-based strategies; "
                            f"{recipe.train.strategy!r} sets its own gradients")


def _single_sentence(spec: TaskSpec) -> bool:
    layout = spec.cs224n or spec.tsv
    return layout is None or layout.text_b is None


def _prepare_task_run(sub: Run, train_seconds: float) -> None:
    """The run folder of one task of a multitask run: its single-task recipe and a marker pointing
    at the shared model."""
    sub.dir.mkdir(parents=True, exist_ok=True)
    write_json(sub.dir / "recipe.json", sub.recipe.model_dump(mode="json"))
    write_json(sub.dir / MULTITASK_MARKER, {"task": sub.model_task, "model": "../../model"})
    sub.mark(state="trained", train_seconds=round(train_seconds, 1), multitask=True)


def _after_training(run: Run, model, started: float) -> None:
    """Calibrate when the recipe sets a target, evaluate its splits, write its report."""
    ex = run.recipe.exit
    splits = list(run.recipe.output.evaluate_splits)
    if run.recipe.output.calibrate and (ex.target_time_pct is not None or ex.max_drop is not None):
        # calibrate first, so evaluating the other splits applies the new setting
        evaluate(run, ex.calibrate_split, model=model)
        calibrate(run, ex.policy, ex.calibrate_split, ex.target_time_pct, ex.max_drop, model=model)
        splits = [s for s in splits if s != ex.calibrate_split]
    for split in splits:
        evaluate(run, split, model=model)
    if run.recipe.output.report:
        from eebench.report.run_report import report_run

        report_run(run)
    run.mark(state="finished", total_seconds=round(time.perf_counter() - started, 1))


def _prepare_run_dir(run: Run, recipe_path: Path, overwrite: bool) -> None:
    if (run.dir / "recipe.json").exists() and overwrite:
        shutil.rmtree(run.dir)
    run.dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe_path, run.dir / "recipe.toml")
    write_json(run.dir / "recipe.json", run.recipe.model_dump(mode="json", exclude={"task"} if run.recipe.is_multitask else None))


def _maybe_dev(run: Run):
    if not run.recipe.train.eval_each_epoch or "dev" not in run.spec.splits:
        return None
    try:
        return load_split(run.spec, run.recipe.task, "dev")
    except UserError as err:
        console.print(f"[yellow]no per-epoch dev metrics:[/] {escape(str(err))}")
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


def resume(folder: str | Path) -> Run:
    """Continue the unfinished run in ``folder`` with the recipe it was started with."""
    folder = Path(folder)
    if not (folder / "recipe.json").is_file():
        raise UserError(f"{folder} is not a run folder (no recipe.json); runs are written by "
                        f"eebench finetune to results/<run-name>/")
    recipe = validate_recipe(read_json(folder / "recipe.json"), source=str(folder / "recipe.json"))
    return finetune(folder / "recipe.toml", [], resume=True, recipe=recipe, run_dir=folder)


# ----------------------------------------------------------------------------------- trace
def ensure_trace(run: Run, split: str, model=None, parallel=None) -> Trace:
    """The stored trace of ``split`` when its key matches, else a fresh one (and say why). With
    ``parallel`` every process traces its share of the batches and the main process saves the whole."""
    from eebench.data.encode import eval_loader

    examples = load_split(run.spec, run.recipe.task, split)
    meta_path = run.model_dir / "exits.json"
    if not meta_path.is_file():
        raise UserError(f"{run.dir} has no trained model yet (model/exits.json missing); "
                        f"run eebench finetune to completion first")
    meta = read_json(meta_path)
    weights = meta.get("weights_sha256") or _stamp_weights(run)
    key = trace_key(weights, examples.fingerprint(), run.recipe.train.max_length, _input_mode(run.recipe))
    path = run.trace_path(split)
    old = stored_key(path)
    if old == key:
        return load_trace(path)
    if old is not None:
        console.print(f"[yellow]trace {path} is stale[/] (model, data or max_length changed); recomputing")
    from eebench.model.build import load_model

    if model is None:
        model, tokenizer, _ = load_model(run.model_dir, run.model_task)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(run.model_dir))
    device = next(model.parameters()).device
    data = encode_split(run.recipe, tokenizer, examples)
    with progress() as bars:
        task = bars.add_task(f"trace {split}", total=len(data), info="")
        signals = compute_signals(model, eval_loader(data, run.recipe.train.eval_batch_size), device,
                                  bars, task, parallel=parallel)
    trace = Trace(split, key, np.asarray(examples.ids), signals["logits"], examples.labels,
                  run.spec.is_regression, signals["lte"], signals["cka"], data.lengths())
    if parallel is None or parallel.is_main:
        save_trace(path, trace)
    return trace


def _input_mode(recipe: Recipe) -> str:
    """What besides max_length decides the tokens: empty for the default (keeps older trace keys)."""
    parts = [p for p in (recipe.model.pair_input if recipe.model.pair_input != "concat" else "",
                         "segments" if recipe.task.pair_loss == "cosine" else "") if p]
    return "|".join(parts)


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
        warnings = warn_collapse(f"{run.dir} {split}", trace.logits, trace.labels, spec)
        write_json(out / "warnings.json", warnings)
        result["warnings"] = warnings
    policy = get_policy(run.recipe.exit.policy)
    if not policy.needs or getattr(trace, policy.needs) is not None:
        table = sweep(trace, spec, policy, _grid(run, policy, trace))
        _write_csv(out / f"sweep_{policy.name}.csv", table)
    for cal in run.calibrations():
        result[cal["policy"]] = apply_calibration(run, trace, cal)
    return result


def warn_collapse(where: str, logits: np.ndarray, labels: np.ndarray, spec: TaskSpec) -> list[dict]:
    """Warn (and return) the exits whose predictions collapsed to one class (BERTer's paraphrase
    head that "always predicts 0"); regression tasks: constant predictions."""
    found = collapse(logits, labels, spec.is_regression)
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


# ----------------------------------------------------------------------------------- speed
def speed(run: Run, policy_name: str, split: str, batch_size: int = 32, limit: int | None = None,
          rounds: int = 3, block: int = 100) -> dict:
    """Measure the real early-exit engine at the policy's calibrated setting against the full model
    (eebench.speed), check its exits against the trace, write eval/<split>/speed_<policy>.json."""
    from eebench.engine import EarlyExitEngine
    from eebench.model.build import load_model
    from eebench.speed import batched_times, length_batches, single_batches, stream_times, summary

    policy = get_policy(policy_name)
    cal_path = run.calibration_path(policy_name)
    if not cal_path.is_file():
        raise UserError(f"{run.dir} has no calibration for policy {policy_name!r} ({cal_path} missing); "
                        f"run eebench calibrate {run.dir} --policy {policy_name} --target-time-pct 50 first")
    cal = with_setting(read_json(cal_path))
    trace = ensure_trace(run, split)
    n = len(trace.logits) if limit is None else min(limit, len(trace.logits))
    expected = policy.exits(trace, [cal["setting"]])[0][:n]
    model, tokenizer, _ = load_model(run.model_dir, run.model_task)
    engine = EarlyExitEngine(model, policy_name, cal["setting"], trace.regression)
    data = encode_split(run.recipe, tokenizer, load_split(run.spec, run.recipe.task, split))
    singles, batches = single_batches(data, n), length_batches(data, n, batch_size)
    for batch in singles[:20]:  # warm-up
        engine.run(batch), engine.run_full(batch)
    with progress() as bars:
        one = bars.add_task(f"{split} batch 1 (engine, then full model)", total=n * rounds, info="")
        t_engine, t_full, got = stream_times(engine, singles, rounds, block, lambda k: bars.advance(one, k))
        many = bars.add_task(f"{split} batch {batch_size}", total=n, info="")
        tb_engine, tb_full, got_b = batched_times(engine, batches, n, lambda k: bars.advance(many, k))
    record = {"policy": policy_name, "setting": cal["setting"], "calibrated_on": cal.get("split"), "split": split,
              **summary(expected, trace.num_layers, t_engine, t_full, got, tb_engine, tb_full, got_b, batch_size)}
    write_json(run.eval_dir(split) / f"speed_{policy_name}.json", record)
    b1, bb = record["batch_1"], record[f"batch_{batch_size}"]
    console.print(f"{split} @ {policy_name} ({setting_label(cal['setting'])}), {n} examples, "
                  f"{record['threads']} threads: mean exit layer {record['mean_exit_layer']:.2f} of "
                  f"{trace.num_layers}, ideal speed-up {record['ideal_speedup']:.2f}x")
    console.print(f"  batch 1: engine p50 {b1['engine_p50_ms']:.2f} ms p95 {b1['engine_p95_ms']:.2f} ms | full "
                  f"p50 {b1['full_p50_ms']:.2f} ms p95 {b1['full_p95_ms']:.2f} ms | measured speed-up "
                  f"{b1['measured_speedup']:.2f}x = {b1['of_ideal']:.2f} of ideal")
    console.print(f"  batch {batch_size}: measured speed-up {bb['measured_speedup']:.2f}x = {bb['of_ideal']:.2f} "
                  f"of ideal; exits equal to the trace: {100 * b1['agreement']:.2f}% (batch 1), "
                  f"{100 * bb['agreement']:.2f}% (batch {batch_size})")
    if min(b1["agreement"], bb["agreement"]) < 1.0:
        console.print("[yellow]warning:[/] the engine's exits differ from the trace simulation on some examples")
    return record
