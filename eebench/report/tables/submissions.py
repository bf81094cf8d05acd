"""GLUE submission files of a table's measured cells on unlabelled test splits."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from eebench.policies import get_policy
from eebench.report.tables.measure import MeasuredCache, has_flag
from eebench.report.tables.spec import TableSpec

def write_submissions(spec: TableSpec, frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """GLUE submission files for every measured cell on an unlabelled split, one folder per
    (recipe set, row group, method): ``<id>_submission/<set>/<group>_<method>/<Task>.tsv``."""
    from eebench.report.submission import write_submission
    from eebench.run.folder import open_run

    cache, paths = MeasuredCache(), []
    for _, r in frame[(frame["policy"].fillna("") != "") & has_flag(frame, "unlabelled")].iterrows():
        run = open_run(r["run"])
        trace = cache.trace(run, spec.columns[r["task"]].split)
        layers = get_policy(r["policy"]).exits(trace, [json.loads(r["setting_json"])])[0]
        label = f"{r['row_group']}_{r['method']}".replace(" ", "_").replace("/", "-")
        path = write_submission(Path(out_dir) / f"{spec.id}_submission" / r["set"] / label, run.spec, trace, layers)
        if path is not None:
            paths.append(path)
    return paths
