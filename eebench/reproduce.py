"""Fill a paper table's missing cells: run the recipes of the cells not yet run, then trace the splits
the table reads (``eebench report --table ID --run-missing``)."""

from __future__ import annotations

from pathlib import Path

from eebench.console import console
from eebench.report.tables import TableSpec, finished, run_folder


def missing_recipes(spec: TableSpec, set_name: str) -> tuple[list[tuple[Path, list[str]]], list[str]]:
    """Recipes (with the cells each fills) whose runs are not finished, and cells without a recipe."""
    todo: dict[Path, list[str]] = {}
    no_recipe = []
    for method in spec.methods:
        for column in spec.columns:
            path = spec.recipe_path(set_name, method, column)
            if path is None or not path.is_file():
                no_recipe.append(f"{method} / {column}")
                continue
            if finished(run_folder(path)):
                continue
            todo.setdefault(path, []).append(f"{method} / {column}")
    return list(todo.items()), no_recipe


def needed_splits(spec: TableSpec, set_name: str) -> list[tuple[Path, str]]:
    """(run folder, split) pairs the table reads whose trace is not stored yet."""
    pairs = []
    for method in spec.methods:
        for column_name, column in spec.columns.items():
            path = spec.recipe_path(set_name, method, column_name)
            if path is None or not path.is_file():
                continue
            folder = run_folder(path, column.task)
            for split in dict.fromkeys([column.split, column.calibrate_split or column.split]):
                if not (folder / "traces" / f"{split}.npz").is_file() and (folder, split) not in pairs:
                    pairs.append((folder, split))
    return pairs


def run_missing(spec: TableSpec, set_name: str, data_dir: str | None = None) -> None:
    """Finetune every missing cell's recipe in turn (one progress line per cell), then trace."""
    from eebench.pipeline.evaluate import evaluate
    from eebench.pipeline.finetune import finetune
    from eebench.rundir import open_run, training_unfinished

    todo, no_recipe = missing_recipes(spec, set_name)
    if no_recipe:
        console.print(f"[dim]{len(no_recipe)} cell(s) have no {set_name} recipe and keep the paper's number[/]")
    for k, (path, cells) in enumerate(todo, 1):
        console.rule(f"[bold]{spec.id}[/] cell {k}/{len(todo)}: {', '.join(cells)} ← {path}")
        unfinished = training_unfinished(run_folder(path))  # an interrupted cell continues
        finetune(path, [], data_dir=data_dir, overwrite=not unfinished, resume=unfinished)
    for folder, split in needed_splits(spec, set_name):
        if not (folder / "status.json").is_file():
            continue
        console.print(f"tracing {split} of {folder}")
        evaluate(open_run(folder, data_dir), split)
    if not todo:
        console.print(f"every {set_name} cell of {spec.id} has a finished run")
