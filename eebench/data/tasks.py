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
class Cs224nLayout:
    """The CS224N minBERT files: tab-separated with CSV quoting despite the .csv name, a header line
    whose first field is the unnamed pandas index, one file per split named ``<prefix>-<split>.csv``."""

    text_a: str
    text_b: str | None
    label: str
    files: dict[str, str]
    """eebench split → file name."""


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
    cs224n: Cs224nLayout | None = None

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


def _cs224n_files(prefix: str) -> dict[str, str]:
    return {"train": f"{prefix}-train.csv", "dev": f"{prefix}-dev.csv", "test": f"{prefix}-test-student.csv"}


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
        # CS224N minBERT tasks (BERTer): a local cs224n data folder, or the hub copies of the same data.
        TaskSpec("sst5", ("negative", "somewhat negative", "neutral", "somewhat positive", "positive"),
                 ("acc",), ("SetFit/sst5", None), ("text", None), folder="cs224n",
                 cs224n=Cs224nLayout("sentence", None, "sentiment", _cs224n_files("ids-sst"))),
        TaskSpec("cfimdb", ("negative", "positive"), ("acc",), None, folder="cs224n",
                 cs224n=Cs224nLayout("sentence", None, "sentiment", _cs224n_files("ids-cfimdb"))),
        TaskSpec("quora", ("not_duplicate", "duplicate"), ("acc", "f1"), ("nyu-mll/glue", "qqp"),
                 ("question1", "question2"), folder="cs224n",
                 cs224n=Cs224nLayout("sentence1", "sentence2", "is_duplicate", _cs224n_files("quora"))),
        TaskSpec("sts", None, ("pearson", "spearman"), ("nyu-mll/glue", "stsb"), ("sentence1", "sentence2"),
                 folder="cs224n",
                 cs224n=Cs224nLayout("sentence1", "sentence2", "similarity", _cs224n_files("sts"))),
        TaskSpec("synthetic", ("negative", "positive"), ("acc",), None, folder="(generated)"),
    ]
}

ALIASES = {"sst-2": "sst2", "sst": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "sst-5": "sst5", "para": "quora"}

# Hub split names for eebench's split names.
HUB_SPLITS = {"dev": "validation", "dev_matched": "validation_matched",
              "dev_mismatched": "validation_mismatched"}


def get_task(name: str) -> TaskSpec:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)} (set task.name)")
    return TASKS[key]
