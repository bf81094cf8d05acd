"""GLUE submission files: one ``<Task>.tsv`` of ``index<TAB>prediction`` per task, as the GLUE server
expects (NLI tasks as label words, the others as class ids, STS-B as a score)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eebench.calibrate import exit_predictions
from eebench.io import write_text

GLUE_FILES = {("cola", "test"): "CoLA", ("sst2", "test"): "SST-2", ("mrpc", "test"): "MRPC",
              ("stsb", "test"): "STS-B", ("qqp", "test"): "QQP", ("qnli", "test"): "QNLI",
              ("rte", "test"): "RTE", ("wnli", "test"): "WNLI", ("mnli", "test_matched"): "MNLI-m",
              ("mnli", "test_mismatched"): "MNLI-mm"}
WORD_LABELS = ("mnli", "qnli", "rte")


def submission_text(spec, trace, exit_layers: np.ndarray) -> str:
    preds = exit_predictions(trace, exit_layers)
    if spec.is_regression:
        values = [f"{min(5.0, max(0.0, float(p))):.3f}" for p in preds]
    elif spec.name in WORD_LABELS:
        values = [spec.labels[int(p)] for p in preds]
    else:
        values = [str(int(p)) for p in preds]
    return "index\tprediction\n" + "".join(f"{i}\t{v}\n" for i, v in zip(trace.ids, values))


def write_submission(folder: Path, spec, trace, exit_layers: np.ndarray) -> Path | None:
    """Write the task's GLUE file into ``folder``; None when the split is not a GLUE test split."""
    name = GLUE_FILES.get((spec.name, trace.split))
    if name is None:
        return None
    return write_text(Path(folder) / f"{name}.tsv", submission_text(spec, trace, exit_layers))
