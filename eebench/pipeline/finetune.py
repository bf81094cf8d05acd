"""Finetune: train a recipe's multi-exit model into a run folder, then evaluate, calibrate and report.

Under ``accelerate launch`` / ``torchrun`` every process runs this: they train data-parallel
(eebench.train.loop), and only the main process writes files, prints and evaluates. The run folder
is owned (eebench.run.ownership.owned) for the whole finetune; an --overwrite builds the new run beside the
old one and swaps it in only when it finished."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from eebench.console import console
from eebench.device import apply_precision, describe as describe_device, inference_dtype
from eebench.provenance import collect as collect_provenance
from eebench.data.load import load_split
from eebench.errors import UserError
from eebench.io import write_json
from eebench.metrics import layerwise
from eebench.paths import resolve_recipe
from eebench.pipeline.calibrate import calibrate
from eebench.pipeline.evaluate import evaluate, warn_collapse
from eebench.pipeline.trace import encode_split, ensure_trace, stamp_weights
from eebench.pipeline.setup import (accelerator_for, build_dir, check_meta_batch, check_model_fits, check_run_dir,
                                    check_second_order, check_splits, check_task_setup,
                                    mark_stopped, maybe_dev, prepare_run_dir, splits_after_training, track)
from eebench.recipe import Recipe
from eebench.recipe_io import load_recipe, task_recipe
from eebench.trace_data import compute_logits
from eebench.run.ownership import owned, staging_dir, swap_in
from eebench.run.folder import MULTITASK_MARKER, Run, read_recipe, run_status, training_unfinished
from eebench.run.records import Status


def finetune(recipe_path: str | Path, overrides: list[str], data_dir: str | None = None,
             overwrite: bool = False, resume: bool = False, recipe: Recipe | None = None,
             run_dir: Path | None = None, if_missing: bool = False, device: str | None = None) -> Run:
    """Train the recipe's model and evaluate it. A multitask recipe trains one shared model and
    leaves one run folder per task under ``<run>/tasks/<task>/`` (the returned run is the parent).
    ``resume`` continues an unfinished run from its last checkpoint (or starts it when there is none).
    ``if_missing`` (a job of a table or array): skip a finished run, resume an interrupted one, redo a
    failed one; the decision is checked again once the run folder is owned."""
    from eebench.train.parallel import Parallel

    recipe_path = resolve_recipe(recipe_path)
    recipe = recipe or load_recipe(recipe_path, overrides)
    if data_dir:
        for entry in recipe.tasks or [recipe.task]:
            entry.data_dir = str(data_dir)
    target = Path(run_dir) if run_dir else recipe.run_dir(Path(recipe_path).stem)
    if if_missing:
        if run_status(target).finished:
            console.print(f"{target} is finished; nothing to do")
            return Run(target, recipe)
        overwrite, resume = _missing_mode(target)
    build = build_dir(target, overwrite, resume)
    run = Run(build, recipe, final=target if build != target else None)
    accelerator = accelerator_for(recipe, run, device)
    par = Parallel.from_accelerator(accelerator)
    console.quiet = not par.is_main  # one writer: the main process prints
    with owned(target, par, "finetune"):
        if if_missing and run_status(target).finished:  # finished by another process meanwhile
            console.print(f"{target} is finished; nothing to do")
            return Run(target, recipe)
        if if_missing and _missing_mode(target) != (overwrite, resume) or build_dir(target, overwrite, resume) != build:
            raise UserError(f"{target} changed while this finetune started; run the command again")
        return _finetune(run, recipe_path, accelerator, par, overwrite, resume)


def _missing_mode(target: Path) -> tuple[bool, bool]:
    """(overwrite, resume) for a run that is not finished: resume an interrupted one (in place or
    beside it), replace a failed one, start a new one."""
    unfinished = training_unfinished(target) or training_unfinished(staging_dir(target))
    return (not unfinished and (target / "recipe.json").exists()), unfinished


def _finetune(run: Run, recipe_path, accelerator, par, overwrite: bool, resume: bool) -> Run:
    """Train, then evaluate; ``run.dir`` is the build folder (``run.final`` when it replaces a run).
    The steps: prepare (everything that can fail on bad input, before the run folder is touched),
    open the run folder, train, evaluate each task, finalize."""
    resume = check_run_dir(run, recipe_path, overwrite, resume)
    if resume is None:  # finished already
        return run
    setup = _prepare(run, recipe_path, accelerator, par, resume)
    _open_run_dir(setup)
    started = time.perf_counter()
    train_seconds = _train(setup, started)
    _evaluate_tasks(setup, train_seconds, started)
    return _finalize(setup, started)


@dataclass
class _Setup:
    """What the steps of a finetune share."""

    run: Run
    recipe_path: str | Path
    accelerator: object
    par: object
    resume: bool
    subs: dict[str, Run]
    splits: dict[str, tuple]
    tokenizer: object
    model: object
    views: dict[str, object]
    jobs: list
    devs: dict[str, tuple]
    checkpoint: Path | None = None

    @property
    def meta(self) -> dict:
        recipe = self.run.recipe
        return {"task": ",".join(self.subs), "labels": [] if recipe.is_multitask else list(self.run.spec.labels or []),
                "model_name": recipe.model.name}


def _prepare(run: Run, recipe_path, accelerator, par, resume: bool) -> _Setup:
    """Data, tokenizer, model and jobs; a mistake in any of them stops the run before its folder is
    touched, so it never leaves a half-made run behind."""
    from accelerate.utils import set_seed

    from eebench.model.build import build_tokenizer
    from eebench.train.loop import check_lockstep
    from eebench.train.state import TaskJob
    from eebench.train.strategies import build_stages

    recipe = run.recipe
    subs = ({t.name: Run(run.dir / "tasks" / t.name, task_recipe(recipe, t.name), t.name) for t in recipe.tasks}
            if recipe.is_multitask else {recipe.task.name: run})
    for sub in subs.values():
        check_splits(sub)  # every split evaluated after training: bad files stop the run now
    splits = {name: (load_split(sub.spec, sub.recipe.task, "train"), maybe_dev(sub)) for name, sub in subs.items()}
    for name, sub in subs.items():
        check_task_setup(recipe_path, sub, splits[name][1])
    set_seed(recipe.train.seed)
    with tempfile.TemporaryDirectory() as tmp:
        task_tokenizer = None
        if "synthetic" in subs:
            from eebench.data.synthetic import build_tokenizer as synthetic_tokenizer

            task_tokenizer = synthetic_tokenizer(Path(tmp))
        tokenizer = build_tokenizer(recipe.model, task_tokenizer)
    model, views = _build(recipe, subs)
    check_model_fits(recipe_path, recipe, tokenizer, model, [sub.spec for sub in subs.values()])
    check_second_order(recipe_path, recipe, model)
    check_meta_batch(recipe_path, recipe, par.world)
    par.broadcast_module_(model)  # every process starts from the main process's weights
    if par.rank > 0:
        set_seed(recipe.train.seed + par.rank)  # dropout differs across processes
    with accelerator.local_main_process_first():  # one process per node tokenizes; the others read its cache
        encoded = {name: encode_split(sub.recipe, tokenizer, splits[name][0]) for name, sub in subs.items()}
        devs = {name: (encode_split(subs[name].recipe, tokenizer, dev), dev.labels)
                for name, (_, dev) in splits.items()
                if dev is not None and dev.labels is not None and recipe.train.eval_each_epoch}
    jobs = [TaskJob(name, views[name], build_stages(sub.recipe.train, name, model.num_layers), encoded[name],
                    sub.spec.is_regression, sub.recipe.train.smart, sub.recipe.task.pair_loss)
            for name, sub in subs.items()]
    check_lockstep(jobs)
    return _Setup(run, recipe_path, accelerator, par, resume, subs, splits, tokenizer, model, views, jobs, devs)


def _build(recipe, subs: dict[str, Run]):
    """The multi-exit model and each task's view of it (the model itself for one task)."""
    from eebench.model.build import build_model, build_multitask_model
    from eebench.train.strategies import needs_lte_head

    info = {name: {"num_labels": sub.spec.num_labels, "lte": needs_lte_head(sub.recipe.train),
                   "pair_cosine": sub.recipe.task.pair_loss == "cosine"} for name, sub in subs.items()}
    if recipe.is_multitask:
        model = build_multitask_model(recipe.model, info)
        return model, {name: model.task(name) for name in subs}
    (name, i), = info.items()
    model = build_model(recipe.model, i["num_labels"], lte=i["lte"], pair_cosine=i["pair_cosine"])
    return model, {name: model}


def _open_run_dir(setup: _Setup) -> None:
    """The main process writes the run folder (all processes have checked it first), then says what runs."""
    from eebench.train.checkpoint import checkpoint_dir
    from eebench.train.loop import global_batch_size

    run, par, accelerator, recipe = setup.run, setup.par, setup.accelerator, setup.run.recipe
    par.barrier()  # every process has checked the run folder before the main process changes it
    if par.is_main:
        if not setup.resume:
            prepare_run_dir(run, Path(setup.recipe_path))
        track(accelerator, run)
    par.barrier()
    setup.checkpoint = checkpoint_dir(run.dir) if setup.resume else None
    console.print(f"[bold]eebench finetune[/] {setup.recipe_path} → {run.shown()}"
                  + (f" (resuming from {setup.checkpoint})" if setup.checkpoint
                     else " (no checkpoint yet: from the start)" if setup.resume else ""))
    for name, (train_examples, dev) in setup.splits.items():
        console.print(f"task {name}: {len(train_examples)} train examples"
                      + (f", {len(dev)} dev examples for per-epoch metrics" if dev is not None else ""))
    console.print(f"model {recipe.model.name} ({setup.model.num_layers} layers, "
                  f"{sum(p.numel() for p in setup.model.parameters()) / 1e6:.1f}M parameters) on {accelerator.device}, "
                  f"{par.world} process{'es' * (par.world > 1)}, global batch "
                  f"{global_batch_size(recipe.train, par.world)}, mixed precision {accelerator.mixed_precision}")
    if getattr(setup.model, "family", None) is None and hasattr(setup.model, "backbone"):
        from eebench.model.families import known_families

        console.print(f"[yellow]note:[/] model_type {getattr(setup.model.backbone.config, 'model_type', None)!r} is not "
                      f"one of the families eebench steps ({known_families()}): it trains, traces and calibrates "
                      f"through its own forward, and `eebench speed` (the early-exit engine) will refuse it")
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        console.print("[yellow]note:[/] fp16 autocast needs a GPU; this CPU run computes in fp32 (bf16 works on CPU)")


def _epoch_hook(setup: _Setup):
    """on_epoch_end for the loop: save the model, and the dev metrics of every exit when asked."""
    from eebench.data.encode import eval_loader
    from eebench.model.build import save_model

    recipe, accelerator, par = setup.run.recipe, setup.accelerator, setup.par

    def on_epoch_end(stage: str, epoch: int) -> dict:
        if par.is_main:
            save_model(setup.model, setup.tokenizer, setup.run.model_dir, {**setup.meta, "stage": stage, "epoch": epoch})
        out = {}
        for name, (data, labels) in setup.devs.items():
            spec = setup.subs[name].spec
            logits = compute_logits(setup.views[name], eval_loader(data, recipe.train.eval_batch_size, accelerator.device),
                                    accelerator.device, par, inference_dtype(accelerator.device, recipe.train.mixed_precision))
            rows = layerwise((spec.primary_metric,), logits, labels, spec.is_regression)
            out[name] = {"dev_metric": spec.primary_metric, "dev_layerwise": [r[spec.primary_metric] for r in rows]}
            warn_collapse(f"{name} dev after {stage} epoch {epoch}", logits, labels, spec,
                          trained_heads(setup.jobs, name, stage))
        return {"tasks": out} if recipe.is_multitask else next(iter(out.values()), {})

    return on_epoch_end


def _train(setup: _Setup, started: float) -> float:
    """Record the start (device, provenance, data), train, save the model; returns the seconds."""
    from eebench.model.build import save_model
    from eebench.train.checkpoint import remove_checkpoint
    from eebench.train.loop import global_batch_size, train

    run, par, accelerator, recipe = setup.run, setup.par, setup.accelerator, setup.run.recipe
    if par.is_main:
        previous = run_status(run.dir) if setup.resume else Status()
        run.mark(state="training", started=previous.started or time.strftime("%Y-%m-%dT%H:%M:%S"),
                 processes=par.world, mixed_precision=str(accelerator.mixed_precision),
                 **describe_device(accelerator.device),
                 tf32=apply_precision(accelerator.device, recipe.train).tf32,  # under bf16 / fp16 too: fp32 work outside autocast
                 global_batch=global_batch_size(recipe.train, par.world), data_root=_data_root(),
                 provenance=collect_provenance(recipe.model, describe_device(accelerator.device)),
                 data=_split_records(run, setup.splits),
                 **({"resumed": (previous.resumed or 0) + 1} if setup.checkpoint else {}))
    try:
        history = train(setup.model, setup.jobs, recipe.train, accelerator, run.dir / "train_log.jsonl",
                        _epoch_hook(setup), run_dir=run.dir, resume=setup.resume)
    except BaseException as err:
        if par.is_main:
            mark_stopped(run, err, trained=False)
        raise
    if par.is_main and not history:  # zero epochs: still save the (untrained) model so the rest of the path runs
        save_model(setup.model, setup.tokenizer, run.model_dir, {**setup.meta, "stage": None, "epoch": 0})
    train_seconds = time.perf_counter() - started
    if par.is_main:
        stamp_weights(run)
        run.mark(state="trained", trained=True, train_seconds=round(train_seconds, 1))
        remove_checkpoint(run.dir)  # the model is saved: the training state is no longer needed
        console.print(f"trained in {train_seconds:.1f} s; model saved to {run.shown(run.model_dir)}")
    for tracker in accelerator.trackers:  # not end_training(): that also ends the process group
        tracker.finish()
    par.barrier()
    return train_seconds


def _evaluate_tasks(setup: _Setup, train_seconds: float, started: float) -> None:
    """Every process traces its share of each task's splits; the main process evaluates and reports."""
    run, par = setup.run, setup.par
    try:
        for name, sub in setup.subs.items():
            if sub is not run and par.is_main:
                _prepare_task_run(sub, train_seconds)
            par.barrier()
            for split in splits_after_training(sub):
                ensure_trace(sub, split, setup.views[name], par)
            if par.is_main:
                _after_training(sub, setup.views[name], started)
    except BaseException as err:
        if par.is_main:
            mark_stopped(run, err, trained=True)
        raise


def _finalize(setup: _Setup, started: float) -> Run:
    """A multitask run is finished when its tasks are; an --overwrite swaps the new run in."""
    run, par = setup.run, setup.par
    if par.is_main and run.recipe.is_multitask:
        run.mark(state="finished", total_seconds=round(time.perf_counter() - started, 1))
        console.print(f"tasks: {', '.join(str(sub.dir) for sub in setup.subs.values())}")
    par.barrier()
    if run.final is None:
        return run
    if par.is_main:
        swap_in(run.dir, run.final)
        console.print(f"replaced the old run in {run.final}")
    par.barrier()
    return Run(run.final, run.recipe)


def trained_heads(jobs, name: str, stage: str) -> set[int] | None:
    """The exits (1-based) whose heads the stage ``stage`` of task ``name`` trains."""
    job = next((j for j in jobs if j.name == name), None)
    current = next((s for s in job.stages if s.name == stage), None) if job is not None else None
    if current is None:
        return None
    trained = {id(p) for p in current.trains(job.model)}
    return {i + 1 for i, head in enumerate(job.model.heads) if any(id(p) in trained for p in head.parameters())}


def _data_root() -> str | None:
    from eebench.paths import data_root

    root = data_root()
    return str(root.resolve()) if root is not None else None


def _split_records(run: Run, splits: dict) -> dict:
    """status.json's record of the training data (each task's in its own run folder when multitask)."""
    if run.recipe.is_multitask:
        return {}
    (train_examples, dev), = splits.values()
    data = Status().record_split("train", train_examples)
    return Status(data=data).record_split("dev", dev) if dev is not None else data


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


def resume(folder: str | Path, device: str | None = None) -> Run:
    """Continue the unfinished run in ``folder`` with the recipe it was started with."""
    folder = Path(folder)
    if folder.name.startswith(".") and folder.name.endswith(".overwrite"):
        folder = folder.with_name(folder.name[1:].removesuffix(".overwrite"))
    staging = staging_dir(folder)
    source = staging if (staging / "recipe.json").is_file() and training_unfinished(staging) else folder
    return finetune(source / "recipe.toml", [], resume=True, recipe=read_recipe(source), run_dir=folder, device=device)



SWITCH_WORDS = ("true", "false", "yes", "no", "on", "off")


def finetune_all(recipes: list[Path], overrides: list[str], data_dir: str | None = None, overwrite: bool = False,
                 resume: bool = False, if_missing: bool = False, seeds: int | None = None,
                 device: str | None = None) -> int:
    """`eebench finetune`: every recipe checked first (hours of training must not end in a typo in the
    last one), then each trained in turn (with --seeds, once per seed); returns how many were left to
    another process that is running them (--if-missing)."""
    from eebench.errors import Busy
    from rich.markup import escape

    if if_missing and (overwrite or resume):
        raise UserError("--if-missing decides by itself whether to resume or start over; drop --overwrite / --resume")
    for recipe in recipes:
        if str(recipe).lower() in SWITCH_WORDS:
            raise UserError(f"{recipe!s}: not a recipe file; switches such as --if-missing, --overwrite and "
                            f"--resume take no value (write --if-missing alone)")
        load_recipe(resolve_recipe(recipe), overrides)
    jobs = [(recipe, overrides) for recipe in recipes]
    if seeds is not None:
        from eebench.seeds import seed_overrides

        jobs = [(recipe, [*overrides, *extra]) for recipe in recipes
                for extra in seed_overrides(load_recipe(resolve_recipe(recipe), overrides), Path(recipe).stem, seeds)]
    left = 0
    for recipe, extra in jobs:
        try:
            run = finetune(recipe, extra, data_dir, overwrite, resume, if_missing=if_missing, device=device)
        except Busy as err:
            if not if_missing:
                raise
            console.print(f"skipped: {escape(str(err).split(';')[0])}")
            left += 1
            continue
        console.print(f"[green]done:[/] {run.dir}")
    return left
