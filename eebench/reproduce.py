"""Fill a paper table's missing cells: run the recipes of the cells not yet finished as jobs
(eebench.jobs: a local pool, Slurm, Ray), then trace the splits the table reads
(``eebench reproduce --table ID``)."""

from __future__ import annotations

from pathlib import Path

from eebench.console import console
from eebench.jobs import Cell, LauncherConfig, Outcome, run_local, run_ray, run_slurm
from eebench.report.tables import TableSpec, finished, run_folder


def table_recipes(spec: TableSpec, set_name: str) -> tuple[dict[Path, list[str]], list[str]]:
    """Every recipe of the set (with the cells each fills), and the cells without a recipe."""
    recipes: dict[Path, list[str]] = {}
    no_recipe = []
    for method in spec.methods:
        for column in spec.columns:
            path = spec.recipe_path(set_name, method, column)
            if path is None or not path.is_file():
                no_recipe.append(f"{method} / {column}")
                continue
            recipes.setdefault(path, []).append(f"{method} / {column}")
    return recipes, no_recipe


def missing_recipes(spec: TableSpec, set_name: str, seeds: int | None = None
                    ) -> tuple[list[tuple[Path, list[str], list[str]]], list[str]]:
    """(recipe, the cells it fills, --set lines) of every run not finished — one per seed with
    ``seeds`` —, and the cells without a recipe."""
    from eebench.recipe_io import load_recipe
    from eebench.seeds import seed_overrides

    recipes, no_recipe = table_recipes(spec, set_name)
    todo = []
    for path, cells in recipes.items():
        if seeds is None:
            if not finished(run_folder(path)):
                todo.append((path, cells, []))
            continue
        for extra in seed_overrides(load_recipe(path), path.stem, seeds):
            if not finished(load_recipe(path, extra).run_dir(path.stem)):
                todo.append((path, cells, extra))
    return todo, no_recipe


def needed_splits(spec: TableSpec, set_name: str) -> list[tuple[Path, str]]:
    """(run folder, split) pairs the table reads whose trace is not stored yet (seeded runs too)."""
    from eebench.report.tables import seed_folders

    pairs = []
    for method in spec.methods:
        for column_name, column in spec.columns.items():
            path = spec.recipe_path(set_name, method, column_name)
            if path is None or not path.is_file():
                continue
            main = run_folder(path, column.task)
            for folder in [main, *seed_folders(main)]:
                for split in dict.fromkeys([column.split, column.calibrate_split or column.split]):
                    if not (folder / "traces" / f"{split}.npz").is_file() and (folder, split) not in pairs:
                        pairs.append((folder, split))
    return pairs


def run_missing(spec: TableSpec, set_name: str, launcher: str = "local", jobs: int | None = None,
                config: LauncherConfig | None = None, log_dir: Path = Path("results/logs"),
                executor=None, seeds: int | None = None, share_gpus: bool = False) -> Outcome:
    """Run every unfinished cell's recipe as a job (``seeds``: one job per seed), wait for them all
    (a failed cell does not stop the others), then trace the splits the table reads."""
    from eebench.errors import UserError
    from eebench.pipeline.evaluate import evaluate
    from eebench.run.folder import open_run
    from eebench.run.ownership import owned

    todo, no_recipe = missing_recipes(spec, set_name, seeds)
    if no_recipe:
        console.print(f"[dim]{len(no_recipe)} cell(s) have no {set_name} recipe and keep the paper's number[/]")
    cells = [Cell(path, names, overrides=extra) for path, names, extra in todo]
    outcome = Outcome(cells)
    log_dir = Path(log_dir) / spec.id
    if cells:
        config = config or LauncherConfig()
        if launcher == "local":
            outcome = run_local(cells, jobs, log_dir, config.gpus, share_gpus)
        elif launcher == "slurm":
            outcome = run_slurm(cells, config, log_dir, executor)
        else:
            outcome = run_ray(cells, config, log_dir)
    else:
        console.print(f"every {set_name} cell of {spec.id} has a finished run")
    for folder, split in needed_splits(spec, set_name):
        if not folder.is_dir() or not finished(folder.parent.parent if (folder / "multitask.json").is_file() else folder):
            continue
        console.print(f"tracing {split} of {folder}")
        run = open_run(folder)
        try:
            with owned(run.owner_dir, what="evaluate"):
                evaluate(run, split)
        except UserError as err:  # another process is at it, or the split's data is missing
            console.print(f"[yellow]not traced:[/] {err}")
    for cell in outcome.failed:
        console.print(f"[bold red]cell failed:[/] {', '.join(cell.cells)} ({cell.recipe}): "
                      f"{cell.detail or 'see its log'}" + (f"; log {cell.log}" if cell.log else ""), soft_wrap=True)
    return outcome


LAUNCH_FLAGS = ("--run-missing", "--launcher", "--jobs", "--launcher-config", "--partition", "--gpus",
                "--share-gpus", "--time-min", "--mem-gb", "--logs", "--seeds", "--data-root")
"""Flags `report` had when it also ran jobs: now `reproduce`'s."""


def refuse_report_args(args: list[str], tables: list[str], cpu: bool) -> None:
    """`eebench report` with arguments it does not take: the old job-running flags get the `eebench
    reproduce` command that does it; anything else is an unknown argument."""
    import shlex

    from eebench.errors import UserError

    extra = [a for a in args if a.split("=", 1)[0] in LAUNCH_FLAGS]
    if {a.split("=", 1)[0] for a in args if a.startswith("--")} == {"--data-root"}:
        raise UserError("--data-root: `eebench report` reads no data, only stored results; drop it (`eebench "
                        "reproduce`, which runs missing cells, takes it)")
    if extra:
        rest = [a for a in args if a != "--run-missing"]
        command = ["eebench", "reproduce", *[x for t in tables for x in ("--table", t)], *(["--cpu"] if cpu else []),
                   *rest]
        raise UserError(f"{extra[0].split('=', 1)[0]}: `eebench report` only reads stored results; run the "
                        f"missing cells with: {shlex.join(command)}")
    if args:
        raise UserError(f"report: unknown argument {args[0]!r}; see eebench report --help")


def show_table(spec: TableSpec, out: Path, sets: tuple[str, ...], scores: Path | None) -> None:
    """Render a paper table's files under ``out`` and print it with its caption and notes."""
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


def list_recipes(table: str | None, cpu: bool, paths_only: bool) -> None:
    """The shipped recipes, or a paper table's cells with the recipe that fills each and its run's state."""
    from rich.table import Table

    from eebench.console import print_table
    from eebench.paths import display_recipe, recipes_root
    from eebench.report.tables import load_spec

    if table is None:
        for path in sorted(recipes_root().rglob("*.toml")):
            print(path if paths_only else display_recipe(path))
        return
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
    print_table(view)
