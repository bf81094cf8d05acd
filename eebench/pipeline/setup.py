"""Everything a finetune checks and sets up before it touches a run folder: the accelerator and its
trackers, what to do with an existing folder (start, resume, overwrite beside it), and the data of
every split the run will read."""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.markup import escape

from eebench.console import console
from eebench.data.load import load_split
from eebench.data.tasks import TaskSpec
from eebench.errors import MissingData, UserError
from eebench.io import read_json, write_json
from eebench.recipe import Recipe
from eebench.run.folder import Run, run_status, training_unfinished
from eebench.run.ownership import staging_dir


def describe(err: BaseException) -> str:
    if isinstance(err, KeyboardInterrupt):
        return str(err) or "interrupted"  # a preemption says which signal and at which step
    return f"{type(err).__name__}: {err}"[:500]


def mark_stopped(run: Run, err: BaseException, trained: bool) -> None:
    """Record why a run stopped: ``interrupted`` (Ctrl-C) or ``failed``, and say how to go on."""
    stopped = isinstance(err, (KeyboardInterrupt, SystemExit))
    run.mark(state="interrupted" if stopped else "failed", trained=trained, error=describe(err))
    if stopped and not trained:
        console.print(f"[yellow]{describe(err) if isinstance(err, KeyboardInterrupt) else 'interrupted'}[/]: "
                      f"continue it from its last checkpoint with: "
                      f"eebench resume {run.shown()}", soft_wrap=True)  # one line: a command to paste
    elif stopped:
        console.print(f"[yellow]interrupted[/] after training (the model is saved): finish it with: "
                      f"eebench evaluate {run.shown()} --split SPLIT (and calibrate / report)", soft_wrap=True)


def accelerator_for(recipe: Recipe, run: Run, device: str | None = None):
    """The Accelerator of a training run: mixed precision from the recipe, else from the launcher; the
    device by eebench.device's rule (``--device``: cpu, cuda, cuda:N for a single process; under a
    distributed launcher each process takes the GPU of its local rank)."""
    import os

    import torch
    from accelerate import Accelerator

    from eebench.device import apply_precision, resolve_device

    target = resolve_device(device)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if launched and device not in (None, "auto", "cpu", "cuda"):
        raise UserError(f"--device {device}: under a distributed launcher each process takes the GPU of its "
                        f"local rank; drop --device (or choose the GPUs with CUDA_VISIBLE_DEVICES)")
    if target.type == "cuda" and not launched:
        torch.cuda.set_device(target)
    apply_precision(target, recipe.train)  # TF32 for training: the rule every command follows

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
        return Accelerator(mixed_precision=recipe.train.mixed_precision, cpu=target.type == "cpu",
                           log_with=trackers or None, project_dir=str(run.dir / "tracking"))
    except (ValueError, ImportError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        what = "output.trackers" if trackers else "train.mixed_precision"
        raise UserError(f"{what}: {first}") from None


def track(accelerator, run: Run) -> None:
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


def build_dir(target: Path, overwrite: bool, resume: bool) -> Path:
    """Where the run is built: in place, or beside the old run when --overwrite replaces a run
    (``.<run>.overwrite``, swapped in when it finishes, so a failed or killed overwrite loses nothing)."""
    if overwrite and resume:
        raise UserError("give only one of --overwrite (start over) and --resume (continue)")
    staging = staging_dir(target)
    if overwrite and (target / "recipe.json").exists():
        return staging
    if resume and (staging / "recipe.json").is_file() and training_unfinished(staging):
        return staging  # an interrupted --overwrite continues beside the old run
    return target


def check_run_dir(run: Run, recipe_path, overwrite: bool, resume: bool) -> bool | None:
    """What to do with the run folder: False start afresh, True resume, None nothing (finished)."""
    if not (run.dir / "recipe.json").exists():
        return False  # nothing there: --resume starts the run (so a requeued job can always pass it)
    if overwrite:
        return False
    status = run_status(run.dir)
    if not status.training_unfinished:
        if resume:
            state = status.state or "unknown"
            then = ("" if status.finished else f"; its evaluation did not finish: run eebench evaluate {run.dir} "
                    f"(and calibrate / report) on it")
            console.print(f"{run.dir} is already trained (status {state}); nothing to resume{then}")
            return None
        raise UserError(f"{run.dir} already holds a run; pass --overwrite to replace it, or pick "
                        f"another name with --set output.run_name=NAME")
    from eebench.train.checkpoint import checkpoint_position

    where = checkpoint_position(run.dir)
    at = (f"last checkpoint: stage {where.stage + 1}, epoch {where.epoch}, step {where.step}" if where
          else "no checkpoint yet")
    if not resume:
        raise UserError(f"{run.dir} holds an unfinished run (status {status.state}, {at}); continue it with: "
                        f"eebench resume {run.shown()} (or start over with --overwrite)")
    exclude = {"task"} if run.recipe.is_multitask else None
    stored = read_json(run.dir / "recipe.json")
    try:  # through the schema: a key a newer eebench added (with its default) is no difference
        stored = Recipe.model_validate(stored).model_dump(mode="json", exclude=exclude)
    except Exception:
        pass  # an unreadable recipe shows as differing keys below
    now = run.recipe.model_dump(mode="json", exclude=exclude)
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


def splits_after_training(run: Run) -> list[str]:
    ex, out = run.recipe.exit, run.recipe.output
    first = [ex.calibrate_split] if out.calibrate and (ex.target_time_pct is not None or ex.max_drop is not None) else []
    return list(dict.fromkeys(first + list(out.evaluate_splits)))


def check_task_setup(recipe_path, run: Run, dev) -> None:
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
    if spec.format is None:
        return spec.hub_fields[1] is None if spec.own_hub else True
    return spec.format.text_b is None




def check_splits(run: Run) -> None:
    """Load every split the run will evaluate after training (files, columns, labels), so a bad data
    file stops the run before training, not after it."""
    for split in splits_after_training(run):
        load_split(run.spec, run.recipe.task, split)


def maybe_dev(run: Run):
    """The dev split for per-epoch metrics; a missing dev file only costs those metrics (a warning),
    a broken one is an error."""
    if not run.recipe.train.eval_each_epoch or "dev" not in run.spec.splits:
        return None
    try:
        return load_split(run.spec, run.recipe.task, "dev")
    except MissingData as err:
        console.print(f"[yellow]no per-epoch dev metrics:[/] {escape(str(err))}")
        return None


def prepare_run_dir(run: Run, recipe_path: Path) -> None:
    """A fresh run folder (the build folder of an --overwrite is emptied; the old run is not touched)."""
    if run.final is not None:
        shutil.rmtree(run.dir, ignore_errors=True)
    run.dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe_path, run.dir / "recipe.toml")
    write_json(run.dir / "recipe.json", run.recipe.model_dump(mode="json", exclude={"task"} if run.recipe.is_multitask else None))


def check_model_fits(recipe_path, recipe: Recipe, tokenizer, model, specs: list[TaskSpec]) -> None:
    """The model and the tokenizer checked against each other before any training: every token id
    has an embedding row, every position a position-table row, and a pair task's tokenizer joins pairs."""
    from eebench.model.families import family_of

    backbone = model.backbone
    config = backbone.config
    rows = backbone.get_input_embeddings().num_embeddings
    where = "model.tokenizer" if recipe.model.tokenizer else "the model's tokenizer"
    if len(tokenizer) > rows:
        raise UserError(f"{recipe_path}: {where} has {len(tokenizer)} tokens but the model embeds only {rows} "
                        f"(model.config.vocab_size): use the model's own tokenizer, or for a random model set "
                        f"model.config.vocab_size >= {len(tokenizer)}")
    family = family_of(config)
    limit = family.max_positions(config) if family is not None else getattr(config, "max_position_embeddings", None)
    if limit is not None and recipe.train.max_length > limit:
        raise UserError(f"{recipe_path}: train.max_length = {recipe.train.max_length} but the model's position table "
                        f"admits {limit} tokens (model.config.max_position_embeddings = "
                        f"{getattr(config, 'max_position_embeddings', getattr(config, 'n_positions', '?'))}): set "
                        f"train.max_length <= {limit}")
    pair_task = any(not _single_sentence(spec) for spec in specs)
    if pair_task and recipe.model.pair_input == "concat" and tokenizer.sep_token is None:
        raise UserError(f"{recipe_path}: this task has sentence pairs but {where} has no separator token to join "
                        f"them (sep_token is None): use a tokenizer with one, or model.pair_input = "
                        f"\"embed_then_concat\"")


def check_meta_batch(recipe_path, recipe: Recipe, world: int) -> None:
    """MetaBERT's meta stage deals its ``meta_batch`` episodes round-robin over the processes
    (eebench.train.maml.my_episodes): with fewer episodes than processes some ranks would hold a GPU
    and compute nothing. Refused in one line before training; a count that is no multiple of the
    processes is said (the ranks' work differs by an episode)."""
    from eebench.train.strategies import STRATEGIES

    if recipe.train.strategy != "metabert" or world <= 1:
        return
    episodes = STRATEGIES["metabert"].args(**recipe.train.args).meta_batch
    if episodes < world:
        raise UserError(f"{recipe_path}: train.args.meta_batch = {episodes} episodes for {world} processes leaves "
                        f"{world - episodes} of them without an episode in MetaBERT's meta stage; set "
                        f"train.args.meta_batch to {world} (or a multiple of it), or train on {episodes} process(es)")
    if episodes % world:
        console.print(f"note: train.args.meta_batch = {episodes} over {world} processes: some take "
                      f"{episodes // world + 1} episodes, others {episodes // world}; a multiple of {world} "
                      f"balances them")


def check_second_order(recipe_path, recipe: Recipe, model) -> None:
    """Second-order MAML (MetaBERT, train.args.first_order = false) needs eager attention: the fused
    attention kernels have no double backward. The backbone switches to eager for the meta stage
    (eebench.train.maml.second_order_ready) through transformers' ``set_attn_implementation``; a model
    that is not eager and cannot switch is refused here, in one line, before any training."""
    from eebench.train.strategies import STRATEGIES

    if recipe.train.strategy != "metabert" or STRATEGIES["metabert"].args(**recipe.train.args).first_order:
        return
    backbone = model.backbone
    current = getattr(backbone.config, "_attn_implementation", None) or "eager"
    if current != "eager" and not hasattr(backbone, "set_attn_implementation"):
        import transformers

        raise UserError(f"{recipe_path}: second-order MAML (train.strategy = \"metabert\") needs eager attention, "
                        f"and this backbone runs {current!r} with no way to switch (transformers "
                        f"{transformers.__version__} lacks set_attn_implementation here): set "
                        f"train.args.first_order = true, or a transformers version whose models have it")
