"""Paper tables from the reference numbers shipped with eebench (eebench/reference/paper_tables.csv)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from eebench.errors import UserError
from eebench.report.render import write_table

ALIASES = {"glue-test": "romebert-glue-test", "glue-dev": "romebert-glue-dev"}


def reference_numbers() -> pd.DataFrame:
    with resources.files("eebench").joinpath("reference/paper_tables.csv").open("r", encoding="utf-8") as f:
        return pd.read_csv(f)


def table_ids() -> list[str]:
    return sorted(reference_numbers()["table"].unique())


def paper_table(table_id: str) -> tuple[pd.DataFrame, str]:
    """A paper's table as printed: one row per (row group, method), one column per task metric
    (and time% / speed-up where the paper gives them). Returns (frame, caption)."""
    ref = reference_numbers()
    key = ALIASES.get(table_id, table_id)
    rows = ref[ref["table"] == key]
    if rows.empty:
        raise UserError(f"unknown table {table_id!r}; choose one of {', '.join(table_ids())} "
                        f"(aliases: {', '.join(ALIASES)})")
    rows = rows.assign(column=rows["task"] + " " + rows["metric"])
    order = list(dict.fromkeys(rows["column"]))
    index = ["row_group", "method"]
    wide = rows.pivot_table(index=index, columns="column", values="value", aggfunc="first", sort=False)
    columns = []
    for col in order:
        columns.append(col)
        for extra, label in (("time_pct", "time%"), ("speedup", "speed-up")):
            vals = rows[rows["column"] == col].set_index(index)[extra]
            if vals.notna().any():
                wide[f"{col} {label}"] = vals
                columns.append(f"{col} {label}")
    frame = wide[columns].reset_index()
    first = rows.iloc[0]
    caption = f"{first['paper']} {first['source_table']} ({key}, split: {first['split']}); paper numbers"
    return frame, caption


def render_paper_table(table_id: str, out_dir: Path) -> tuple[pd.DataFrame, list[Path]]:
    frame, caption = paper_table(table_id)
    key = ALIASES.get(table_id, table_id)
    return frame, write_table(frame, Path(out_dir) / key, caption, digits=1)
