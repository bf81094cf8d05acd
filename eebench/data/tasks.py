"""Task metadata: one small declarative spec per task (fields, labels, metrics, file layout)."""

from __future__ import annotations

from dataclasses import dataclass, field

from eebench.errors import UserError


@dataclass(frozen=True)
class TsvLayout:
    """Where the columns are in a GLUE-distribution TSV file."""

    text_a: str
    text_b: str | None
    label: str
    no_header: dict[str, int] = field(default_factory=dict)
    """For files without a header line (CoLA train/dev): column name → position."""
    headerless_splits: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    name: str
    labels: tuple[str, ...] | None  # None: regression
    metrics: tuple[str, ...]  # the first is the task's primary metric
    hub: tuple[str, str] | None  # (dataset path, config) for datasets.load_dataset
    hub_fields: tuple[str, str | None] = ("sentence", None)
    tsv: TsvLayout | None = None
    folder: str = ""  # the GLUE folder name, for messages
    splits: tuple[str, ...] = ("train", "dev", "test")

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


def _glue(name, folder, labels, metrics, hub_fields, tsv, splits=("train", "dev", "test")) -> TaskSpec:
    return TaskSpec(name, labels, metrics, ("nyu-mll/glue", name), hub_fields, tsv, folder, splits)


# Label order follows the `datasets` GLUE configs, so local files and the hub give the same ids.
TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        _glue("cola", "CoLA", ("unacceptable", "acceptable"), ("mcc", "acc"), ("sentence", None),
              TsvLayout("sentence", None, "label", {"label": 1, "sentence": 3}, ("train", "dev"))),
        _glue("sst2", "SST-2", ("negative", "positive"), ("acc",), ("sentence", None),
              TsvLayout("sentence", None, "label")),
        _glue("mrpc", "MRPC", ("not_equivalent", "equivalent"), ("f1", "acc", "acc_f1_avg"),
              ("sentence1", "sentence2"), TsvLayout("#1 String", "#2 String", "Quality")),
        _glue("stsb", "STS-B", None, ("pearson", "spearman"), ("sentence1", "sentence2"),
              TsvLayout("sentence1", "sentence2", "score")),
        _glue("qqp", "QQP", ("not_duplicate", "duplicate"), ("f1", "acc", "acc_f1_avg"),
              ("question1", "question2"), TsvLayout("question1", "question2", "is_duplicate")),
        _glue("mnli", "MNLI", ("entailment", "neutral", "contradiction"), ("acc",),
              ("premise", "hypothesis"), TsvLayout("sentence1", "sentence2", "gold_label"),
              ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")),
        _glue("qnli", "QNLI", ("entailment", "not_entailment"), ("acc",), ("question", "sentence"),
              TsvLayout("question", "sentence", "label")),
        _glue("rte", "RTE", ("entailment", "not_entailment"), ("acc",), ("sentence1", "sentence2"),
              TsvLayout("sentence1", "sentence2", "label")),
        _glue("wnli", "WNLI", ("not_entailment", "entailment"), ("acc",), ("sentence1", "sentence2"),
              TsvLayout("sentence1", "sentence2", "label")),
        TaskSpec("synthetic", ("negative", "positive"), ("acc",), None, folder="(generated)"),
    ]
}

ALIASES = {"sst-2": "sst2", "sst": "sst2", "sts-b": "stsb", "sts": "stsb", "mnli-m": "mnli"}

# Hub split names for eebench's split names.
HUB_SPLITS = {"dev": "validation", "dev_matched": "validation_matched",
              "dev_mismatched": "validation_mismatched"}


def get_task(name: str) -> TaskSpec:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)} (set task.name)")
    return TASKS[key]
