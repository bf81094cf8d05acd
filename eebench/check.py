"""Regression checks: compare a run's stored results with reference numbers, within tolerances.

A reference file (JSON) lists numbers by name with their tolerance in metric points:
    {"run": "...", "recorded_from": "...", "numbers": {"dev/layer1/acc": {"value": 76.4, "tol": 2.0}, ...}}
`eebench check RUN --record FILE` writes one from a run; `eebench check RUN --reference FILE`
compares, prints what moved, and fails (exit code 1) when any number is outside its tolerance."""

from __future__ import annotations

from pathlib import Path

from eebench.errors import UserError
from eebench.io import read_json, write_json

DEFAULT_TOL = {"metric": 2.0, "time_pct": 5.0}


def collect(run) -> dict[str, float]:
    """The numbers a check compares: every exit's metrics and every operating point, per split."""
    numbers: dict[str, float] = {}
    for split in run.evaluated_splits():
        for row in run.layerwise(split) or []:
            for m in run.spec.metrics:
                numbers[f"{split}/layer{row['layer']}/{m}"] = float(row[m])
        for op in run.operating_points(split):
            point = op.dump()
            for key in (*run.spec.metrics, "time_pct"):
                if key in point:
                    numbers[f"{split}/{point['policy']}/{key}"] = float(point[key])
    if not numbers:
        raise UserError(f"{run.dir} has no evaluation results to check; run eebench evaluate first")
    return numbers


def record(run, path: Path) -> dict:
    numbers = collect(run)
    ref = {"run": run.dir.name, "recorded_from": str(run.dir),
           "numbers": {k: {"value": round(v, 4), "tol": DEFAULT_TOL["time_pct" if k.endswith("time_pct") else "metric"]}
                       for k, v in numbers.items()}}
    write_json(path, ref)
    return ref


def compare(run, path: Path) -> list[dict]:
    """One row per reference number: reference, measured, difference, tolerance, ok."""
    if not Path(path).is_file():
        raise UserError(f"reference file {path} not found; record one with eebench check RUN --record {path}")
    try:
        ref = read_json(path)
    except ValueError as err:
        raise UserError(f"{path} is unreadable ({str(err).splitlines()[0]}); record it again with "
                        f"eebench check RUN --record {path}") from None
    if not isinstance(ref, dict) or "numbers" not in ref:
        raise UserError(f"{path}: no 'numbers' key; expected a file written by eebench check --record")
    measured = collect(run)
    rows = []
    for name, spec in ref["numbers"].items():
        got = measured.get(name)
        diff = None if got is None else got - spec["value"]
        rows.append({"number": name, "reference": spec["value"], "measured": got, "diff": diff,
                     "tol": spec["tol"], "ok": diff is not None and abs(diff) <= spec["tol"]})
    return rows


def check_command(folder: Path, reference: Path | None, record_to: Path | None) -> bool:
    """`eebench check`: record a run's numbers, or compare them with a reference and print the table;
    False when a number moved beyond its tolerance."""
    from rich.table import Table

    from eebench.console import console, print_table
    from eebench.run.folder import open_run

    run = open_run(folder)
    if record_to is not None:
        ref = record(run, record_to)
        console.print(f"recorded {len(ref['numbers'])} numbers from {folder} to {record_to}")
        return True
    if reference is None:
        raise UserError("give --reference FILE to compare, or --record FILE to write one")
    rows = compare(run, reference)
    table = Table("number", "reference", "measured", "diff", "tol", "ok", title=f"eebench check {folder}")
    fmt = lambda v: "missing" if v is None else f"{v:.2f}"  # noqa: E731
    for row in rows:
        table.add_row(row["number"], fmt(row["reference"]), fmt(row["measured"]), fmt(row["diff"]),
                      f"{row['tol']:.2f}", "ok" if row["ok"] else "[red]MOVED[/]")
    print_table(table)
    failed = [row for row in rows if not row["ok"]]
    if failed:
        console.print(f"[bold red]check failed:[/] {len(failed)} of {len(rows)} numbers moved beyond tolerance")
        return False
    console.print(f"[green]check passed:[/] {len(rows)} numbers within tolerance")
    return True
