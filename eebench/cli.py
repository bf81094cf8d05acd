"""The `eebench` command line: one plain function per command; the library does the work."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from eebench.cli_group import OneLineErrors
from eebench.console import console
from eebench.errors import UserError

app = typer.Typer(
    cls=OneLineErrors,
    help="Train, calibrate, evaluate and report early-exit BERT models (DeeBERT, PABEE, RomeBERT, ...).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

def _switches_show_no_type() -> None:
    """typer prints a value type on every option, ``<bool>`` on switches that take no value too,
    which reads as "--overwrite true"; switches show none."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is not None:
        TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else shown(self, ctx)


_switches_show_no_type()

RunArg = Annotated[Path, typer.Argument(help="A run folder written by `eebench finetune`, e.g. results/quickstart.")]
DataDirOpt = Annotated[Optional[str], typer.Option(
    "--data-dir", help="Folder of the task's files (GLUE TSV / ELUE TSV / CS224N); overrides task.data_dir.")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="Where the model runs: cpu, cuda, cuda:N, mps (default: the GPU when there is one, else "
                     "the CPU); recorded in the run.")]
ReadingOpt = Annotated[Optional[str], typer.Option(
    "--reading", help="Read the table's cells under a named alternative to its default rules (a table's "
    "readings are listed in docs/tables.md, e.g. romebert-glue-test: accuracy, fixed-drop); its files are "
    "written as <id>-<reading>.*.")]
DataRootOpt = Annotated[Optional[Path], typer.Option(
    "--data-root", envvar="EEBENCH_DATA", show_envvar=True,
    help="Data root searched before the hub for recipes that name only their task: DIR/<TASK>/ "
         "(e.g. DIR/SST-2/dev.tsv; also DIR/glue/<TASK>/, ELUE tasks in DIR/elue/<TASK>/, CS224N files in "
         "DIR/cs224n/).")]
BootstrapOpt = Annotated[Optional[int], typer.Option(
    "--bootstrap", min=0, metavar="N",
    help="Resamples of the bootstrap intervals on every metric and time% (default: the recipe's "
         "output.bootstrap, 1000); 0: no intervals.")]


def user_errors(fn):
    """Turn a UserError into one red line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            from eebench.errors import BUSY_EXIT, Busy

            console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(BUSY_EXIT if isinstance(err, Busy) else 2) from None
        except OSError as err:
            line = os_error_line(err)
            if line is None:
                raise
            console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as err:  # libraries that wrap a full disk in their own error (safetensors, torch)
            if "No space left on device" not in str(err):
                raise
            console.print("[bold red]error:[/] no space left on the device while writing; free some space (or set "
                          "output.root on another disk) and run the command again", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]; files already written are complete (written atomically)")
            raise typer.Exit(130) from None

    return wrapper


def os_error_line(err: OSError) -> str | None:
    """One line for the faults of the machine rather than of eebench: a full disk, a read-only or
    unwritable folder, a file where a folder should be. None for anything else (a real bug)."""
    import errno

    where = err.filename or "a file eebench was writing"
    fixes = {
        errno.ENOSPC: "no space left on the device; free some space (or set output.root on another disk) and "
                      "run the command again: files already written are complete",
        errno.EDQUOT: "disk quota exceeded; free some space and run the command again",
        errno.EROFS: "read-only file system; set output.root to a writable folder",
        errno.EACCES: "permission denied; set output.root to a folder you can write",
        errno.ENOTDIR: "a file is in the way where a folder should be; move it or set output.root elsewhere",
        errno.EISDIR: "a folder is in the way where a file should be; move it",
    }
    fix = fixes.get(err.errno)
    return None if fix is None else f"{where}: {fix}"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"eebench {version('eebench')}")
        except PackageNotFoundError:
            print("eebench (not installed: run `pip install -e .` in the repository)")
        raise typer.Exit()


@app.callback()
def _setup(
    _show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print eebench's version and exit.")] = False,
) -> None:
    from eebench.hub import settle_offline_mode

    settle_offline_mode()


@app.command()
@user_errors
def finetune(
    recipes: Annotated[list[Path], typer.Argument(
        metavar="RECIPE...", help="Recipe TOML file(s), e.g. recipes/quickstart.toml; several run one after another.")],
    set_: Annotated[list[str], typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a recipe value, e.g. --set train.lr=3e-5 (repeatable; values are TOML).")] = [],
    data_dir: DataDirOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run folder of the same name.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an unfinished (killed) run from its last checkpoint; "
                                         "starts the run when there is none yet, does nothing when it finished.")] = False,
    if_missing: Annotated[bool, typer.Option("--if-missing", help="A job step: skip a finished run, resume an "
                                             "interrupted one, redo a failed one, leave one another process is "
                                             "running alone (exit 0).")] = False,
    data_root: DataRootOpt = None,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="Train each recipe this many times, with train.seed, "
                                                  "train.seed+1, ... into <run>-seed<S>/ (eebench compare pools them: "
                                                  "mean ± std).")] = None,
    device: DeviceOpt = None,
) -> None:
    """Train a multi-exit model from a recipe into results/<run-name>/, then (by the recipe's output
    switches) trace and evaluate its splits, calibrate the exit policy and write the report.

    Several processes: `accelerate launch --multi_gpu --num_processes N $(which eebench) finetune ...` or
    `torchrun --nproc_per_node N $(which eebench) finetune ...` (train.batch_size stays the global batch)."""
    from eebench.paths import set_data_root
    from eebench.errors import Busy
    from eebench.pipeline.finetune import finetune as run_finetune
    from eebench.train.parallel import close_process_group

    set_data_root(data_root)
    if if_missing and (overwrite or resume):
        raise UserError("--if-missing decides by itself whether to resume or start over; drop --overwrite / --resume")
    from eebench.paths import resolve_recipe
    from eebench.recipe_io import load_recipe
    for recipe in recipes:  # every recipe checked before the first one trains for hours
        if str(recipe).lower() in ("true", "false", "yes", "no", "on", "off"):
            raise UserError(f"{recipe!s}: not a recipe file; switches such as --if-missing, --overwrite and "
                            f"--resume take no value (write --if-missing alone)")
        load_recipe(resolve_recipe(recipe), set_)
    jobs = [(recipe, set_) for recipe in recipes]
    if seeds is not None:
        from eebench.seeds import seed_overrides

        jobs = [(recipe, [*set_, *extra]) for recipe in recipes
                for extra in seed_overrides(load_recipe(resolve_recipe(recipe), set_), Path(recipe).stem, seeds)]
    left = 0
    for recipe, overrides in jobs:
        try:
            run = run_finetune(recipe, overrides, data_dir, overwrite, resume, if_missing=if_missing, device=device)
        except Busy as err:
            if not if_missing:
                raise
            console.print(f"skipped: {escape(str(err).split(';')[0])}")
            left += 1
            continue
        console.print(f"[green]done:[/] {run.dir}")
    close_process_group()  # every recipe done: the distributed launcher's process group ends cleanly
    if left:
        from eebench.errors import BUSY_EXIT

        raise typer.Exit(BUSY_EXIT)  # the others finished; these are another process's to finish


@app.command("resume")
@user_errors
def resume_(run: RunArg, device: DeviceOpt = None) -> None:
    """Continue an unfinished (killed, preempted) run from its last checkpoint, with the recipe it was
    started with; same as `eebench finetune RECIPE --resume` with that recipe's --set values."""
    from eebench.pipeline.finetune import resume as run_resume

    done = run_resume(run, device)
    console.print(f"[green]done:[/] {done.dir}")


@app.command()
@user_errors
def evaluate(
    run: RunArg,
    split: Annotated[str, typer.Option(help="Split to evaluate: train, dev, test (MNLI: dev_matched, ...).")] = "dev",
    data_dir: DataDirOpt = None,
    as_: Annotated[Optional[str], typer.Option("--as", help="With --data-dir: the evaluation's name; results go to "
                                               "eval/<split>@<name>/ (default: the data folder's name), never over "
                                               "the run's own.")] = None,
    retrace: Annotated[bool, typer.Option(help="Recompute the split's trace even when a stored one matches "
                                          "(e.g. a damaged traces/<split>.npz).")] = False,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Run the model once over a split with all exits (or reuse its stored trace when nothing changed);
    write layer-wise metrics, the threshold sweep, and every saved calibration applied to the split."""
    from eebench.paths import set_data_root
    from eebench.pipeline.evaluate import evaluate as run_evaluate
    from eebench.run.folder import open_run
    from eebench.run.ownership import owned

    set_data_root(data_root)
    if as_ and not data_dir:
        raise UserError("--as names an evaluation on other data: give it with --data-dir")
    r = open_run(run, data_dir, as_)
    from eebench.device import resolve_device

    resolve_device(device)  # a device this machine lacks is an error even when nothing needs tracing
    with owned(r.owner_dir, what="evaluate"):
        run_evaluate(r, split, retrace=retrace, device=device, bootstrap=bootstrap)


@app.command()
@user_errors
def calibrate(
    run: RunArg,
    policy: Annotated[str, typer.Option(
        help="Exit policy (the registry's names, listed in docs/policies.md; an unknown name lists them).")] = "entropy",
    split: Annotated[str, typer.Option(help="Split to fit the threshold on.")] = "dev",
    target_time_pct: Annotated[Optional[float], typer.Option(
        help="Pick the best metric with time% (100 · mean exit layer / L) at or below this.")] = None,
    max_drop: Annotated[Optional[float], typer.Option(
        help="Pick the least time% whose metric is at most this many points below the last exit's.")] = None,
    grid: Annotated[Optional[str], typer.Option(
        help="Comma-separated values of the policy's parameter to sweep (default: the recipe's or the policy's grid).")] = None,
    guarantee: Annotated[Optional[float], typer.Option(
        metavar="EPS", help="Instead of a target: the most aggressive setting whose disagreement with the full model "
                            "is <= EPS with probability >= 1 - delta (Learn-then-Test; docs/policies.md).")] = None,
    delta: Annotated[float, typer.Option(help="With --guarantee: the probability the guarantee may fail.")] = 0.1,
    data_dir: DataDirOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Choose an exit policy's setting on one split to meet a time% target or a maximum metric drop, save it
    to calibration/<policy>.json; `evaluate` then applies it to any other split."""
    from eebench.pipeline.calibrate import calibrate as run_calibrate
    from eebench.run.folder import open_run

    if sum(x is not None for x in (target_time_pct, max_drop, guarantee)) > 1:
        raise UserError("give only one of --target-time-pct, --max-drop and --guarantee")
    if target_time_pct is not None and not 0 < target_time_pct <= 100:
        raise UserError(f"--target-time-pct {target_time_pct:g}: must be in (0, 100]")
    from eebench.run.ownership import owned
    from eebench.paths import set_data_root

    set_data_root(data_root)
    r = open_run(run, data_dir)
    from eebench.device import resolve_device

    resolve_device(device)  # a device this machine lacks is an error even when nothing needs tracing
    if target_time_pct is None and max_drop is None and guarantee is None:
        target_time_pct, max_drop = r.recipe.exit.target_time_pct, r.recipe.exit.max_drop
        if target_time_pct is not None or max_drop is not None:
            console.print("no target given: the recipe's exit."
                          + (f"target_time_pct = {target_time_pct:g}" if target_time_pct is not None
                             else f"max_drop = {max_drop:g}"))
    with owned(r.owner_dir, what="calibrate"):
        run_calibrate(r, policy, split, target_time_pct, max_drop, _parse_grid(grid), device=device,
                      bootstrap=bootstrap, guarantee=None if guarantee is None else (guarantee, delta))


@app.command()
@user_errors
def speed(
    run: RunArg,
    policy: Annotated[str, typer.Option(help="Calibrated exit policy to run (see eebench calibrate).")] = "entropy",
    split: Annotated[str, typer.Option(help="Split whose examples to time.")] = "dev",
    batch_size: Annotated[int, typer.Option(help="The batched measurement's batch size (with row compaction).")] = 32,
    limit: Annotated[Optional[int], typer.Option(help="Time only the split's first N examples.")] = None,
    rounds: Annotated[int, typer.Option(help="Batch-1 rounds; each example's time is its median.")] = 3,
    data_dir: DataDirOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Run the real early-exit engine (it stops computing at the exit) at the policy's calibrated setting
    against the full model: wall-clock per example at batch size 1 (p50/p95), per batch with row
    compaction, measured vs ideal speed-up, and its exits against the trace; writes
    eval/<split>/speed_<policy>.json, which `eebench report` shows."""
    from eebench.pipeline.speed import speed as run_speed
    from eebench.run.folder import open_run

    for name, value, least in (("--batch-size", batch_size, 2), ("--limit", limit, 1), ("--rounds", rounds, 1)):
        if value is not None and value < least:
            raise UserError(f"{name} {value}: must be at least {least}")
    from eebench.run.ownership import owned
    from eebench.paths import set_data_root

    set_data_root(data_root)
    r = open_run(run, data_dir)
    from eebench.device import resolve_device

    resolve_device(device)  # a device this machine lacks is an error even when nothing needs tracing
    with owned(r.owner_dir, what="speed"):
        run_speed(r, policy, split, batch_size, limit, rounds, device=device)


def _parse_grid(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--grid {text!r}: expected comma-separated numbers, e.g. 0,0.05,0.1") from None


LAUNCH_FLAGS = ("--run-missing", "--launcher", "--jobs", "--launcher-config", "--partition", "--gpus",
                "--share-gpus", "--time-min", "--mem-gb", "--logs", "--seeds", "--data-root")
"""Flags `report` had when it also ran jobs: now `reproduce`'s."""


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def report(
    ctx: typer.Context,
    run: Annotated[list[Path], typer.Option("--run", help="Run folder to report on (repeatable).")] = [],
    table: Annotated[list[str], typer.Option("--table", help="Paper table id, e.g. glue-test (repeatable).")] = [],
    out: Annotated[Path, typer.Option(help="Folder for paper tables.")] = Path("results/tables"),
    cpu: Annotated[bool, typer.Option("--cpu", help="Show the CPU-scale recipe set's cells (MiniLM-L6, local "
                                      "files) instead of both sets.")] = False,
    scores: Annotated[Optional[Path], typer.Option(help="CSV of scores for unlabelled (test) cells: "
                                                   "row_group,method,task,value.")] = None,
    reading: ReadingOpt = None,
) -> None:
    """Write Markdown, LaTeX and CSV tables and PNG/PDF figures from stored results only (it runs
    nothing); paper tables show the paper's numbers beside ours. `eebench reproduce` runs missing cells."""
    extra = [a for a in ctx.args if a.split("=", 1)[0] in LAUNCH_FLAGS]
    flags = {a.split("=", 1)[0] for a in ctx.args if a.startswith("--")}
    if flags == {"--data-root"}:
        raise UserError("--data-root: `eebench report` reads no data, only stored results; drop it (`eebench "
                        "reproduce`, which runs missing cells, takes it)")
    if extra:
        import shlex

        rest = [a for a in ctx.args if a != "--run-missing"]
        command = ["eebench", "reproduce", *[x for t in table for x in ("--table", t)], *(["--cpu"] if cpu else []),
                   *rest]
        raise UserError(f"{extra[0].split('=', 1)[0]}: `eebench report` only reads stored results; run the "
                        f"missing cells with: {shlex.join(command)}")
    if ctx.args:
        raise UserError(f"report: unknown argument {ctx.args[0]!r}; see eebench report --help")
    if not run and not table:
        raise UserError("nothing to report: give --run RUN_FOLDER and/or --table ID (e.g. --table glue-test)")
    from eebench.report.run_report import report_run
    from eebench.report.tables import load_spec
    from eebench.run.folder import open_run

    specs = [load_spec(t, reading) for t in table]  # every id checked before anything is written
    from eebench.run.ownership import owned

    for folder in run:
        r = open_run(folder)
        with owned(r.owner_dir, what="report"):
            report_run(r)
    for spec in specs:
        _show_table(spec, out, ("cpu",) if cpu else ("paper", "cpu"), scores)


def _show_table(spec, out: Path, sets: tuple[str, ...], scores: Path | None) -> None:
    from eebench.report.render import markdown
    from eebench.report.tables import caption, mismatches, render
    from eebench.report.tables.display import how_cells_fill

    frame, shown, paths = render(spec, out, sets, scores)
    print(markdown(shown, spec.digits))
    console.print(caption(spec, frame), highlight=False)
    if spec.notes:
        console.print(" ".join(spec.notes.split()), highlight=False)
    console.print(how_cells_fill(spec, frame, sets), highlight=False)
    for line in mismatches(frame):
        console.print(f"[yellow]paper inconsistency:[/] {line}")
    names = sorted({p.name for p in paths})
    console.print(f"wrote {len(paths)} files under {out}: " + ", ".join(names[:6])
                  + (f" and {len(names) - 6} more" if len(names) > 6 else ""), highlight=False)


@app.command()
@user_errors
def reproduce(
    table: Annotated[list[str], typer.Option("--table", help="Paper table id, e.g. glue-dev (repeatable).")],
    cpu: Annotated[bool, typer.Option("--cpu", help="The CPU-scale recipe set (MiniLM-L6, local GLUE / CS224N "
                                      "files); default: the paper-scale set (BERT-base, GPU).")] = False,
    out: Annotated[Path, typer.Option(help="Folder for the rendered tables.")] = Path("results/tables"),
    scores: Annotated[Optional[Path], typer.Option(help="CSV of scores for unlabelled (test) cells: "
                                                   "row_group,method,task,value.")] = None,
    launcher: Annotated[str, typer.Option(help="Where the cells run: local (a pool of --jobs worker processes), "
                                          "slurm (one job per cell via submitit), ray.")] = "local",
    jobs: Annotated[Optional[int], typer.Option(help="Local workers (default: one per visible GPU, else 1); "
                                                "each worker gets one GPU, or its share of the CPU cores.")] = None,
    launcher_config: Annotated[Optional[Path], typer.Option(help="TOML file with a \\[launcher] section: partition, "
                                                            "gpus, cpus, time_min, mem_gb, account, qos, setup, ...")] = None,
    partition: Annotated[Optional[str], typer.Option(help="Slurm partition.")] = None,
    gpus: Annotated[Optional[int], typer.Option(help="GPUs per job (default 1); a job with N GPUs trains on all N "
                                                "(N processes through torch's distributed launcher).")] = None,
    share_gpus: Annotated[bool, typer.Option("--share-gpus", help="Local: allow more workers than visible GPUs "
                                             "(several workers on one GPU).")] = False,
    time_min: Annotated[Optional[int], typer.Option(help="Slurm time limit per job, minutes.")] = None,
    mem_gb: Annotated[Optional[int], typer.Option(help="Slurm memory per job, GB.")] = None,
    logs: Annotated[Path, typer.Option(help="Folder of the cells' logs (one per cell).")] = Path("results/logs"),
    data_root: DataRootOpt = None,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="Run every cell's recipe with this many seeds "
                                                  "(<run>-seed<S>); cells show mean ± std over them.")] = None,
    reading: ReadingOpt = None,
) -> None:
    """Run the recipes of a paper table's cells that have no finished run (as local, Slurm or Ray jobs;
    finished cells are kept, interrupted ones resume), then render the table as `eebench report` does."""
    from eebench.jobs import LAUNCHERS, load_launcher_config
    from eebench.paths import set_data_root
    from eebench.report.tables import load_spec
    from eebench.reproduce import run_missing as fill

    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs {jobs}: must be at least 1")
    config = load_launcher_config(launcher_config, partition=partition, gpus=gpus, time_min=time_min, mem_gb=mem_gb)
    set_data_root(data_root)
    specs = [load_spec(t, reading) for t in table]  # every id checked before anything runs
    set_name = "cpu" if cpu else "paper"
    failed = 0
    for spec in specs:
        failed += len(fill(spec, set_name, launcher, jobs, config, logs, seeds=seeds, share_gpus=share_gpus).failed)
        _show_table(spec, out, (set_name,), scores)
    if failed:
        console.print(f"[bold red]{failed} cell(s) failed[/] (their logs are named above); run the same command "
                      f"again to retry them (finished cells are kept)")
        raise typer.Exit(1)


@app.command()
@user_errors
def recipes(
    table: Annotated[Optional[str], typer.Option("--table", help="List this paper table's cells and recipes.")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="The CPU-scale recipe set (default: the paper-scale set).")] = False,
    paths_only: Annotated[bool, typer.Option("--paths", help="Only the recipe files, one per line (for a job array "
                                             "of your own: each line is one `eebench finetune FILE --if-missing`).")] = False,
) -> None:
    """List the shipped recipes (they travel with eebench; `recipes/...` works from any folder), or a
    paper table's cells with the recipe that fills each and whether its run is finished."""
    from eebench.paths import display_recipe, recipes_root

    if table is None:
        for path in sorted(recipes_root().rglob("*.toml")):
            print(path if paths_only else display_recipe(path))
        return
    from rich.table import Table

    from eebench.report.tables import finished, load_spec, run_folder
    from eebench.reproduce import table_recipes

    spec = load_spec(table)
    set_name = "cpu" if cpu else "paper"
    found, no_recipe = table_recipes(spec, set_name)
    if paths_only:
        for path in found:
            print(path)
        return
    view = Table("cells", "recipe", "run folder", "state", title=f"{spec.id}: {set_name} recipe set "
                 f"({len(found)} recipes; {len(no_recipe)} cells keep the paper's number)", title_justify="left")
    for path, cells in found.items():
        folder = run_folder(path)
        view.add_row(", ".join(cells), display_recipe(path), str(folder), "finished" if finished(folder) else "")
    from eebench.console import print_table

    print_table(view)


@app.command()
@user_errors
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of one task, e.g. results/cmp_sst2_*.")],
    split: Annotated[str, typer.Option(help="Split whose layer-wise results to compare.")] = "dev",
    out: Annotated[Path, typer.Option(help="Folder for the comparison table and figure.")] = Path("results/tables"),
    policy: Annotated[list[str], typer.Option(help="Also sweep this exit policy over each run's trace (repeatable), "
                                              "e.g. --policy entropy --policy cka.")] = [],
    time_pct: Annotated[list[float], typer.Option(help="With --policy: the best metric at time% ≤ this (repeatable).")] = [],
    at_metric: Annotated[list[float], typer.Option(help="With --policy: the least time% reaching this metric "
                                                   "(repeatable).")] = [],
    bootstrap: BootstrapOpt = None,
) -> None:
    """Put runs side by side: the layer-wise metric of every exit, one column per setting (stored results
    only). Runs of one recipe with different seeds (finetune --seeds) pool into mean ± std. Two runs on the
    same examples are also compared pairwise: the bootstrap difference B − A of the metric at a matched
    time% (--time-pct, default A's calibrated operating point) and of time% at a matched metric, with its
    interval and p-value."""
    from eebench.report.compare import compare_runs, paired_section
    from eebench.report.render import markdown
    from eebench.run.folder import open_run

    if (time_pct or at_metric) and not policy and len(runs) != 2:
        raise UserError("--time-pct / --at-metric need an exit policy to sweep: add --policy entropy (or another)")
    frame, paths = compare_runs([open_run(f) for f in runs], out, split, tuple(policy), tuple(time_pct),
                                tuple(at_metric))
    print(markdown(frame, 1))
    if len(runs) == 2:
        pair, written = paired_section([open_run(f) for f in runs], out, split, policy, time_pct, at_metric,
                                       1000 if bootstrap is None else bootstrap)
        print(markdown(pair, 2))
        paths += written
    from eebench.provenance import differences
    from eebench.run.folder import run_status

    opened = [open_run(f) for f in runs]
    for line in differences({r.name: run_status(r.owner_dir).provenance for r in opened}):
        console.print(f"[yellow]warning:[/] compared runs differ: {line}", highlight=False, soft_wrap=True)
    console.print(f"wrote {', '.join(str(p) for p in paths)}")


@app.command()
@user_errors
def check(
    run: RunArg,
    reference: Annotated[Optional[Path], typer.Option(help="Reference numbers (JSON) to compare against.")] = None,
    record: Annotated[Optional[Path], typer.Option(help="Write this run's numbers as a new reference file.")] = None,
) -> None:
    """Compare a run's stored results with reference numbers (per-number tolerances); exit code 1 when
    any number moved beyond its tolerance, with a table of what moved."""
    from rich.table import Table

    from eebench.check import compare, record as record_numbers
    from eebench.run.folder import open_run

    r = open_run(run)
    if record is not None:
        ref = record_numbers(r, record)
        console.print(f"recorded {len(ref['numbers'])} numbers from {run} to {record}")
        return
    if reference is None:
        raise UserError("give --reference FILE to compare, or --record FILE to write one")
    rows = compare(r, reference)
    table = Table("number", "reference", "measured", "diff", "tol", "ok", title=f"eebench check {run}")
    for row in rows:
        fmt = lambda v: "missing" if v is None else f"{v:.2f}"  # noqa: E731
        table.add_row(row["number"], fmt(row["reference"]), fmt(row["measured"]), fmt(row["diff"]),
                      f"{row['tol']:.2f}", "ok" if row["ok"] else "[red]MOVED[/]")
    from eebench.console import print_table

    print_table(table)
    failed = [row for row in rows if not row["ok"]]
    if failed:
        console.print(f"[bold red]check failed:[/] {len(failed)} of {len(rows)} numbers moved beyond tolerance")
        raise typer.Exit(1)
    console.print(f"[green]check passed:[/] {len(rows)} numbers within tolerance")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
