"""The papers' numbers shipped with eebench (eebench/reference/paper_tables.csv); tables: eebench.report.tables."""

from __future__ import annotations

from importlib import resources

import pandas as pd

ALIASES = {"glue-test": "romebert-glue-test", "glue-dev": "romebert-glue-dev"}


def reference_numbers() -> pd.DataFrame:
    with resources.files("eebench").joinpath("reference/paper_tables.csv").open("r", encoding="utf-8") as f:
        return pd.read_csv(f)


def table_ids() -> list[str]:
    return sorted(reference_numbers()["table"].unique())
