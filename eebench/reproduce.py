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
