"""Paper tables as declarative specs over one tidy results frame, split by job:

* ``spec``: the table spec (pydantic, validated at load) and where a recipe's runs are;
* ``measure``: the tidy frame, one row per paper number with ours beside it (structured flags);
* ``display``: the printed table, its caption, the paper's inconsistencies;
* ``figures`` and ``submissions``: figures across methods, GLUE files of unlabelled test cells.

``render`` writes them all. Everything is read from stored traces; no model runs here."""

from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd

from eebench.report.tables.display import caption, clock, display, mismatches
from eebench.report.tables.figures import table_figures
from eebench.report.tables.measure import (FLAGS, merge_scores, derived_value, has_flag, measure, read_scores)
from eebench.report.tables.spec import (SETS, Column, Derived, Reading, Rule, TableSpec, finished, load_spec, run_folder,
                                        seed_folders, spec_ids)
from eebench.report.submission import write_submissions

measure_module = importlib.import_module("eebench.report.tables.measure")
"""The measuring module itself (the name ``measure`` is its function): where reference numbers are read."""


def render(table: str | TableSpec, out_dir: Path, sets: tuple[str, ...] = SETS,
           scores: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """Write ``<id>.md/.tex/.csv`` (the printed table), ``<id>_cells.csv`` (the tidy frame), figures
    across methods, and GLUE submission files for unlabelled test cells. A spec under another reading
    than its default writes ``<id>-<reading>.*``, beside the default's files."""
    from eebench.io import atomic_write
    from eebench.report.render import write_table

    spec = load_spec(table) if isinstance(table, str) else table
    frame = measure(spec, sets, read_scores(scores) if scores else None)
    shown = display(spec, frame)
    name = spec.id if spec.reading == "default" else f"{spec.id}-{spec.reading}"
    stem = Path(out_dir) / name
    paths = write_table(shown, stem, caption(spec, frame), digits=spec.digits)
    paths.append(atomic_write(stem.with_name(name + "_cells.csv"),
                              lambda p: frame.to_csv(p, index=False, float_format="%.4g")))
    paths += write_submissions(spec, frame, out_dir)
    paths += table_figures(spec, frame, out_dir)
    return frame, shown, paths


__all__ = ["FLAGS", "SETS", "Column", "Derived", "Reading", "Rule", "TableSpec", "merge_scores", "caption", "clock",
           "derived_value", "display", "finished", "has_flag", "load_spec", "measure", "mismatches", "read_scores",
           "render", "run_folder", "seed_folders", "spec_ids", "table_figures", "write_submissions"]
