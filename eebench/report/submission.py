"""GLUE submission files: one ``<Task>.tsv`` of ``index<TAB>prediction`` per task, as the GLUE server
expects (NLI tasks as label words, the others as class ids, STS-B as a score). Which split writes
which file, and whether as words, is the task's declaration (``TaskSpec.submission``). A run writes
its own (eebench calibrate on a test split); a paper table writes one folder per measured cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eebench.calibration import exit_predictions
from eebench.io import write_text

def submission_text(spec, trace, exit_layers: np.ndarray) -> str:
    preds = exit_predictions(trace, exit_layers)
    if spec.is_regression:
        values = [f"{min(5.0, max(0.0, float(p))):.3f}" for p in preds]
    elif spec.submission_words:
        values = [spec.labels[int(p)] for p in preds]
    else:
        values = [str(int(p)) for p in preds]
    return "index\tprediction\n" + "".join(f"{i}\t{v}\n" for i, v in zip(trace.ids, values))


def write_submission(folder: Path, spec, trace, exit_layers: np.ndarray) -> Path | None:
    """Write the task's submission file into ``folder``; None when its split has none (the task's
    ``submission`` declares which splits do: GLUE's test splits)."""
    name = spec.submission.get(trace.split)
    if name is None:
        return None
    return write_text(Path(folder) / f"{name}.tsv", submission_text(spec, trace, exit_layers))


def write_submissions(spec, frame, out_dir: Path) -> list[Path]:
    """A paper table's GLUE submission files, for every measured cell on an unlabelled split, one folder
    per (recipe set, row group, method): ``<id>_submission/<set>/<group>_<method>/<Task>.tsv``."""
    import json

    from eebench.policies import get_policy
    from eebench.report.tables.measure import MeasuredCache, has_flag
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
