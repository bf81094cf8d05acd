"""Task metadata: one small declarative spec per task (labels, metrics, hub copy, data format).
Adding a task is one entry below (and its test); its format (eebench.data.formats) reads the files."""

from __future__ import annotations

from dataclasses import dataclass, field

from eebench.data.formats import Cs224n, ElueTsv, Format, GlueTsv, OwnFiles
from eebench.errors import UserError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    labels: tuple[str, ...] | None  # None: regression
    metrics: tuple[str, ...]  # the first is the task's primary metric
    hub: tuple[str, str] | None  # (dataset path, config) for datasets.load_dataset
    hub_fields: tuple[str, str | None] = ("sentence", None)
    format: Format | None = None  # None: generated (synthetic)
    folder: str = ""  # the task's folder name (GLUE, ELUE), for the data root and messages
    splits: tuple[str, ...] = ("train", "dev", "test")
    hub_dev_from_train: int = 0
    """The hub copy has no dev split (IMDb): dev is this many of the hub's train examples, held out by a
    fixed permutation (``HUB_DEV_SEED``), and train is the rest, as ELUE's files split them (20,000 /
    5,000). Local files with their own dev.tsv are read as they are."""
    hub_is_other_data: str = ""
    """Set when the hub's copy is another data set than the task's files (CS224N's Quora and STS
    splits are not GLUE's QQP and STS-B): the hub is used only when the recipe asks
    (``task.hub_fallback = true``), and this says why."""
    hub_split_names: dict[str, str] = field(default_factory=dict)
    """eebench split → the hub's split name where it differs from ``HUB_SPLITS`` (dev → validation)."""
    submission: dict[str, str] = field(default_factory=dict)
    """eebench split → the benchmark's submission file stem (GLUE: ``{"test": "CoLA"}`` → CoLA.tsv)."""
    submission_words: bool = False
    """Submission predictions as label words (GLUE's NLI tasks), not class ids."""
    hub_label: str = "label"
    """The hub data set's label field."""
    own_hub: bool = False
    """The recipe's own hub data set (task.format = "hub"): read from the hub, never generated."""

    def hub_split(self, split: str) -> str:
        return self.hub_split_names.get(split, HUB_SPLITS.get(split, split))

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


def _glue(name, folder, labels, metrics, hub_fields, tsv, splits=("train", "dev", "test"), words=False,
          submission=None) -> TaskSpec:
    """A GLUE task: the hub's nyu-mll/glue config of its name, its submission file named after its folder."""
    return TaskSpec(name, labels, metrics, ("nyu-mll/glue", name), hub_fields, tsv, folder, splits,
                    submission=submission or {"test": folder}, submission_words=words)


def _elue(name, folder, labels, metrics, hub, hub_fields, layout: ElueTsv, **kw) -> TaskSpec:
    return TaskSpec(f"elue_{name}", labels, metrics, hub, hub_fields, layout, folder, **kw)


# Column positions of ELUE's own processors (fastnlp/ElasticBERT elue/elue.py): labelled files, unlabelled test.
_ELUE_SINGLE = ElueTsv(text=(0,), label=1, test_text=(1,))  # SST-2, IMDb: sentence, label
_ELUE_PAIR = ElueTsv(text=(0, 1), label=-1, test_text=(1, 2))  # STS-B, SNLI, SciTail: a, b, ..., label
_ELUE_MRPC = ElueTsv(text=(3, 4), label=0, test_text=(3, 4))  # GLUE MRPC's columns: Quality, #1 ID, #2 ID, #1/#2 String


# Label order follows the `datasets` GLUE configs, so local files and the hub give the same ids.
TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        _glue("cola", "CoLA", ("unacceptable", "acceptable"), ("mcc", "acc"), ("sentence", None),
              GlueTsv("sentence", None, "label", {"label": 1, "sentence": 3}, ("train", "dev"))),
        _glue("sst2", "SST-2", ("negative", "positive"), ("acc",), ("sentence", None),
              GlueTsv("sentence", None, "label")),
        _glue("mrpc", "MRPC", ("not_equivalent", "equivalent"), ("f1", "acc", "acc_f1_avg"),
              ("sentence1", "sentence2"), GlueTsv("#1 String", "#2 String", "Quality")),
        _glue("stsb", "STS-B", None, ("pearson", "spearman"), ("sentence1", "sentence2"),
              GlueTsv("sentence1", "sentence2", "score")),
        _glue("qqp", "QQP", ("not_duplicate", "duplicate"), ("f1", "acc", "acc_f1_avg"),
              ("question1", "question2"), GlueTsv("question1", "question2", "is_duplicate", skip_malformed=True)),
        _glue("mnli", "MNLI", ("entailment", "neutral", "contradiction"), ("acc",),
              ("premise", "hypothesis"), GlueTsv("sentence1", "sentence2", "gold_label"),
              ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched"), words=True,
              submission={"test_matched": "MNLI-m", "test_mismatched": "MNLI-mm"}),
        _glue("qnli", "QNLI", ("entailment", "not_entailment"), ("acc",), ("question", "sentence"),
              GlueTsv("question", "sentence", "label"), words=True),
        _glue("rte", "RTE", ("entailment", "not_entailment"), ("acc",), ("sentence1", "sentence2"),
              GlueTsv("sentence1", "sentence2", "label"), words=True),
        _glue("wnli", "WNLI", ("not_entailment", "entailment"), ("acc",), ("sentence1", "sentence2"),
              GlueTsv("sentence1", "sentence2", "label")),
        # CS224N minBERT tasks (BERTer): a local cs224n data folder, or the hub copies of the same data.
        TaskSpec("sst5", ("negative", "somewhat negative", "neutral", "somewhat positive", "positive"),
                 ("acc",), ("SetFit/sst5", None), ("text", None),
                 Cs224n("sentence", None, "sentiment", _cs224n_files("ids-sst")), "cs224n"),
        TaskSpec("cfimdb", ("negative", "positive"), ("acc",), None, format=Cs224n(
            "sentence", None, "sentiment", _cs224n_files("ids-cfimdb")), folder="cs224n"),
        TaskSpec("quora", ("not_duplicate", "duplicate"), ("acc", "f1"), ("nyu-mll/glue", "qqp"),
                 ("question1", "question2"), Cs224n("sentence1", "sentence2", "is_duplicate", _cs224n_files("quora")),
                 "cs224n", hub_is_other_data="the hub has GLUE QQP (40,430 dev pairs), not CS224N's Quora splits "
                 "(283,010 / 40,429 / 80,859, BERTer's)"),
        TaskSpec("sts", None, ("pearson", "spearman"), ("nyu-mll/glue", "stsb"), ("sentence1", "sentence2"),
                 Cs224n("sentence1", "sentence2", "similarity", _cs224n_files("sts")), "cs224n",
                 hub_is_other_data="the hub has GLUE STS-B (1,500 dev pairs), not CS224N's STS splits "
                 "(6,040 / 863 / 1,725, BERTer's)"),
        # ELUE (CsdBERT Table 4): the ELUE TSVs (DIR/elue/<folder>/), else the hub's copies of the
        # datasets (SNLI's pairs without a gold label, −1, dropped as is standard; the hub's IMDb has no dev
        # split: ELUE's 20,000 / 5,000 train / dev is rebuilt as a fixed split of its 25,000 train reviews).
        _elue("sst2", "SST-2", ("negative", "positive"), ("acc",), None, ("sentence", None), _ELUE_SINGLE),
        _elue("imdb", "IMDb", ("negative", "positive"), ("acc",), ("stanfordnlp/imdb", None), ("text", None),
              _ELUE_SINGLE, hub_dev_from_train=5000),
        _elue("scitail", "SciTail", ("neutral", "entails"), ("acc",), ("allenai/scitail", "tsv_format"),
              ("premise", "hypothesis"), _ELUE_PAIR),
        _elue("snli", "SNLI", ("entailment", "neutral", "contradiction"), ("acc",), ("stanfordnlp/snli", None),
              ("premise", "hypothesis"), _ELUE_PAIR),
        _elue("mrpc", "MRPC", ("not_equivalent", "equivalent"), ("acc_f1_avg", "f1", "acc"), ("nyu-mll/glue", "mrpc"),
              ("sentence1", "sentence2"), _ELUE_MRPC),
        _elue("stsb", "STS-B", None, ("pearson", "spearman"), ("nyu-mll/glue", "stsb"), ("sentence1", "sentence2"),
              _ELUE_PAIR),
        TaskSpec("synthetic", ("negative", "positive"), ("acc",), None, folder="(generated)"),
    ]
}

ALIASES = {"sst-2": "sst2", "sst": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "sst-5": "sst5", "para": "quora",
           "elue_sst-2": "elue_sst2", "elue_sts-b": "elue_stsb"}

HUB_DEV_SEED = 0
"""The permutation seed of ``hub_dev_from_train`` (documented in docs/tables.md; never change it: runs
and calibrations recorded against the split would no longer match it)."""

# Hub split names for eebench's split names.
HUB_SPLITS = {"dev": "validation", "dev_matched": "validation_matched",
              "dev_mismatched": "validation_mismatched"}


def task_spec(cfg) -> TaskSpec:
    """The spec of a recipe's [task]: a built-in task by name, or the recipe's own data set (task.format)."""
    if getattr(cfg, "format", None) is None:
        return get_task(cfg.name)
    fields = [cfg.text] if isinstance(cfg.text, str) else list(cfg.text)
    text_a, text_b = fields[0], fields[1] if len(fields) > 1 else None
    labels = tuple(cfg.labels) if cfg.labels is not None else None
    metrics = tuple(cfg.metrics or (("pearson", "spearman") if labels is None else ("acc",)))
    if cfg.format == "hub":
        splits = tuple(dict.fromkeys(["train", "dev", "test", *cfg.hub_splits]))
        return TaskSpec(cfg.name, labels, metrics, (cfg.hub, cfg.hub_config), (text_a, text_b), None, cfg.name,
                        splits, hub_label=cfg.label, hub_split_names=dict(cfg.hub_splits), own_hub=True)
    splits = tuple(cfg.files) if cfg.files else ("train", "dev", "test")
    return TaskSpec(cfg.name, labels, metrics, None, (text_a, text_b), OwnFiles(cfg.format, text_a, text_b, cfg.label),
                    cfg.name, splits)


def get_task(name: str) -> TaskSpec:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)} (set task.name)")
    return TASKS[key]
