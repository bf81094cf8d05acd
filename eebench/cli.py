"""The `eebench` command line: one plain function per command, which parses and dispatches; the
library does the work (eebench.pipeline, eebench.reproduce, eebench.report, eebench.check)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from eebench.cli_group import (BootstrapOpt, DataDirOpt, DataRootOpt, DeviceOpt, OneLineErrors, ReadingOpt, RunArg,
                               show_version, switches_show_no_type, user_errors)
from eebench.console import console
from eebench.errors import UserError

app = typer.Typer(
    cls=OneLineErrors,
    help="Train, calibrate, evaluate and report early-exit BERT models (DeeBERT, PABEE, RomeBERT, ...).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
switches_show_no_type()


@app.callback()
def _setup(
    _show_version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
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
    from eebench.pipeline.finetune import finetune_all
    from eebench.train.parallel import close_process_group

    set_data_root(data_root)
    left = finetune_all(recipes, set_, data_dir, overwrite, resume, if_missing, seeds, device)
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
    from eebench.pipeline.evaluate import evaluate as run_evaluate
    from eebench.run.command import command_run

    if as_ and not data_dir:
        raise UserError("--as names an evaluation on other data: give it with --data-dir")
    with command_run(run, "evaluate", data_dir, data_root, device, as_) as r:
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
    from eebench.pipeline.calibrate import calibrate as run_calibrate, check_target, parse_grid, recipe_target
    from eebench.run.command import command_run

    check_target(target_time_pct, max_drop, guarantee)
    values = parse_grid(grid)  # every argument checked before the run is opened
    with command_run(run, "calibrate", data_dir, data_root, device) as r:
        target_time_pct, max_drop = recipe_target(r, target_time_pct, max_drop, guarantee)
        run_calibrate(r, policy, split, target_time_pct, max_drop, values, device=device,
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
    from eebench.pipeline.speed import check_counts, speed as run_speed
    from eebench.run.command import command_run

    check_counts(batch_size, limit, rounds)
    with command_run(run, "speed", data_dir, data_root, device) as r:
        run_speed(r, policy, split, batch_size, limit, rounds, device=device)


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
    from eebench.report.run_report import report_run
    from eebench.report.tables import load_spec
    from eebench.reproduce import refuse_report_args, show_table
    from eebench.run.command import command_run

    refuse_report_args(ctx.args, table, cpu)
    if not run and not table:
        raise UserError("nothing to report: give --run RUN_FOLDER and/or --table ID (e.g. --table glue-test)")
    specs = [load_spec(t, reading) for t in table]  # every id checked before anything is written
    for folder in run:
        with command_run(folder, "report") as r:
            report_run(r)
    for spec in specs:
        show_table(spec, out, ("cpu",) if cpu else ("paper", "cpu"), scores)


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
    mem_gb: Annotated[Optional[int], typer.Option(help="Slurm host memory per GPU of a job, GB (default 32).")] = None,
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
    from eebench.reproduce import run_missing as fill, show_table

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
        show_table(spec, out, (set_name,), scores)
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
    from eebench.reproduce import list_recipes

    list_recipes(table, cpu, paths_only)


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
    from eebench.report.compare import compare_command

    compare_command(runs, split, out, policy, time_pct, at_metric, bootstrap)


@app.command()
@user_errors
def check(
    run: RunArg,
    reference: Annotated[Optional[Path], typer.Option(help="Reference numbers (JSON) to compare against.")] = None,
    record: Annotated[Optional[Path], typer.Option(help="Write this run's numbers as a new reference file.")] = None,
) -> None:
    """Compare a run's stored results with reference numbers (per-number tolerances); exit code 1 when
    any number moved beyond its tolerance, with a table of what moved."""
    from eebench.check import check_command

    if not check_command(run, reference, record):
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
