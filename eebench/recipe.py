"""The recipe schema: pydantic models with ``extra="forbid"``, importing nothing from eebench.

A recipe lists only what differs from the defaults below. Loading (TOML, ``--set`` overrides) and
the checks against eebench's registries (strategies, policies, tasks) live beside the loader in
eebench.recipe_io; the ``--set`` syntax, the one-line error wording and the TOML writer in
eebench.recipe_text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(StrictModel):
    name: str = "bert-base-uncased"
    """Hub id, local folder, Python package (source="package") or model_type (source="random")."""
    source: Literal["auto", "hub", "path", "package", "random"] = "auto"
    """auto: a local folder when `name` is one, else the hub."""
    config: dict[str, Any] = Field(default_factory=dict)
    """source="random": config values for `AutoConfig.for_model(name, **config)`."""
    tokenizer: str | None = None
    """Tokenizer hub id or folder when it differs from the model's (random models on GLUE need one)."""
    revision: str | None = None
    """A hub model's revision (branch, tag or commit hash) to load; recorded in the run's provenance
    with the commit actually loaded. None: the default branch."""
    trust_remote_code: bool = False
    """Let transformers run the model repository's own Python code (backbones not built into
    transformers, e.g. ElasticBERT's hub checkpoint for CsdBERT Table 4). Off by default: only turn it
    on for a repository whose code you trust; the run's model folder keeps a copy of that code."""
    exit_pooling: Literal["first", "mean"] = "first"
    """Exit heads pool the first token (DeeBERT) or the mean over real tokens."""
    exit_dropout: float | None = None
    """Dropout in the exit heads; default: the backbone's hidden dropout."""
    pair_input: Literal["concat", "embed_then_concat"] = "concat"
    """Sentence pairs: concatenated before embedding ([CLS] a [SEP] b [SEP], BERT), or each sentence
    embedded on its own and the embeddings concatenated (BERTer §3.4; positions restart at b)."""


class SyntheticConfig(StrictModel):
    n_train: int = Field(3000, gt=0)
    n_dev: int = Field(600, gt=0)
    n_test: int = Field(600, gt=0)
    seed: int = 0


class TaskConfig(StrictModel):
    name: str = "sst2"
    data_dir: str | None = None
    """Folder of the task's files in their original format; unset: the data root, then the hub."""
    files: dict[str, str] = Field(default_factory=dict)
    """Split → file name inside data_dir when it differs from `<split>.tsv`."""
    train_subset: int | None = Field(None, gt=0)
    """Use a random subset of this many training examples."""
    eval_subset: int | None = Field(None, gt=0)
    """Use a random subset of this many examples of every other split."""
    dev_from_train: int | None = Field(None, gt=0)
    """Hold out this many training examples as the `dev` split (for tasks whose dev set is missing)."""
    hub_fallback: bool = False
    """CS224N's Quora and STS: use the hub's GLUE QQP / STS-B when the CS224N files are not found (other
    data sets of other sizes; the run records the source). Off: a missing file is an error."""
    revision: str | None = None
    """The hub dataset's revision (branch, tag or commit) when the split comes from the hub."""
    subset_seed: int = 0
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    pair_loss: Literal["cross_entropy", "cosine"] = "cross_entropy"
    """Binary sentence-pair tasks: cross-entropy on the exit heads' logits, or BERTer's cosine
    embedding loss on the cosine of the two sentences' representations (prediction: cos > 0.5)."""
    # A data set of one's own (docs/recipes.md, "Your own data"): set `format` and the fields below;
    # `name` is then the task's own name (and its folder under the data root), not a built-in task.
    format: Literal["csv", "tsv", "jsonl", "hub"] | None = None
    """Your own data: csv / tsv / jsonl files (task.files per split, under task.data_dir or the data
    root's <name>/ folder), or a hub data set (task.hub, task.hub_config, task.hub_splits); None: a built-in task."""
    text: str | list[str] | None = None
    """Your own data: the text field, or the two fields of a sentence pair."""
    label: str = "label"
    """Your own data: the label field (class names or ids 0..n-1; numbers for regression)."""
    labels: list[str] | None = None
    """Your own data: the class names in id order (or set regression = true)."""
    regression: bool = False
    metrics: list[str] | None = None
    """Your own data: metrics, the first primary (default: acc; regression: pearson, spearman)."""
    hub: str | None = None
    """format = "hub": the data set's hub path (e.g. "stanfordnlp/imdb")."""
    hub_config: str | None = None
    hub_splits: dict[str, str] = Field(default_factory=dict)
    """format = "hub": eebench split → the data set's split name (default: dev → validation)."""

    @model_validator(mode="after")
    def _check_own_data(self) -> "TaskConfig":
        if self.format is None:
            own = [k for k in ("text", "labels", "metrics", "hub", "hub_config") if getattr(self, k) is not None]
            if own or self.regression or self.hub_splits:
                raise ValueError(f"task.{(own or ['regression'])[0]} describes your own data: set task.format "
                                 f"(csv, tsv, jsonl or hub) too")
            return self
        fields = [self.text] if isinstance(self.text, str) else self.text
        if not fields or len(fields) > 2:
            raise ValueError("task.text: name the text field, or the two fields of a pair (text = [\"a\", \"b\"])")
        if (self.labels is None) != self.regression:
            raise ValueError("task.labels: list the class names in id order (labels = [\"neg\", \"pos\"]), "
                             "or set task.regression = true; not both")
        if self.labels is not None and (len(self.labels) < 2 or len(set(self.labels)) != len(self.labels)):
            raise ValueError("task.labels: at least two distinct class names")
        from eebench.metrics import METRICS

        unknown = [m for m in self.metrics or [] if m not in METRICS]
        if unknown:
            raise ValueError(f"task.metrics: unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
        if self.format == "hub" and not self.hub:
            raise ValueError("task.format = \"hub\" needs task.hub, the data set's hub path")
        return self


class SmartConfig(StrictModel):
    """SMART smoothness-inducing adversarial regularization (any strategy); SMART's defaults."""

    enabled: bool = False
    lambda_s: float = Field(1.0, ge=0)
    epsilon: float = Field(1e-5, gt=0)
    sigma: float = Field(1e-5, gt=0)
    eta: float = Field(1e-3, gt=0)
    steps: int = Field(1, ge=1)


class TrainConfig(StrictModel):
    strategy: str = "two_stage"
    args: dict[str, Any] = Field(default_factory=dict)
    """Strategy arguments, validated by the strategy (see docs/methods.md)."""
    epochs: int = Field(3, ge=0)
    lr: float = Field(2e-5, gt=0)
    head_lr: float | None = Field(None, gt=0)
    """Learning rate of the exit heads (and LTE head) in stages that also train the backbone;
    default: the stage's lr. Heads-only stages (e.g. DeeBERT's stage 2) keep their own lr."""
    batch_size: int = Field(32, gt=0)
    """Global batch: the examples of one optimizer step, whatever the number of processes and
    grad_accum_steps (each process takes its share; results match a single-process run)."""
    per_device_batch_size: int | None = Field(None, gt=0)
    """The other convention: examples per process per forward pass; when set, the global batch is
    per_device_batch_size × processes × grad_accum_steps and batch_size is ignored."""
    grad_accum_steps: int = Field(1, ge=1)
    """Micro-batches per optimizer step and process (the global batch stays batch_size: memory, not
    results, changes; CsdBERT's batch-level terms then span one micro-batch of every process)."""
    checkpoint_every: int | None = Field(None, gt=0)
    """Also checkpoint the full training state every this many optimizer steps (always: after every
    epoch); `eebench finetune RECIPE --resume` continues from the last one."""
    eval_batch_size: int = Field(64, gt=0)
    max_length: int = Field(128, gt=1)
    seed: int = 42
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float | None = 1.0
    eval_each_epoch: bool = True
    """Record every exit's dev metric after each epoch in train_log.jsonl."""
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    """None: what the launcher says (`accelerate launch --mixed_precision bf16`, accelerate config),
    else no; a value here overrides the launcher."""
    tf32: bool = True
    """fp32 matmuls in TF32 on GPUs that have it (Ampere and newer): about 2x faster fp32 training at
    ~1e-3 relative precision per product, in every command that runs the model; under bf16 / fp16 for the
    fp32 work outside autocast. No effect on the CPU; recorded in status.json, traces and speed records."""
    overlap_grad_reduce: bool | None = None
    """With several processes: all-reduce the gradients in buckets while the backward runs (as DDP does;
    eebench.train.overlap); false: one all-reduce after the backward. Same sums either way. None: on GPUs
    only (on the CPU, gloo's reduction takes the cores the backward needs: 0.90x measured on 2 cores)."""
    loader_workers: int | None = Field(None, ge=0)
    """Processes building the training batches ahead of the step (DataLoader workers). None: 2 on a GPU,
    0 on the CPU (where the cores are busy with the step itself)."""
    smart: SmartConfig = Field(default_factory=SmartConfig)
    lte: bool = False
    """Add a learned-to-exit head to any strategy and train it jointly (L_i + J_i, BERTer) in every
    stage that trains all exit heads or the early ones (docs/methods.md); strategy "lte" has it built in."""


class TaskEntry(TaskConfig):
    """One task of a multitask recipe ([[tasks]]): a task plus what it may set differently from
    [train] and [exit]."""

    strategy: str | None = None
    """Default: train.strategy. Multitask training runs every task's stages in lockstep, so the
    strategies must have the same stages (names and epochs)."""
    args: dict[str, Any] | None = None
    """Default: train.args when the strategy is train.strategy, else {}."""
    smart: SmartConfig | None = None
    """Default: train.smart (BERTer applies SMART to the paraphrase task only)."""
    policy: str | None = None
    """Exit policy of this task; default: exit.policy for classification, "lte" for regression."""


class ExitConfig(StrictModel):
    policy: str | None = None
    """Default: "entropy" (DeeBERT) on classification, "patience" (PABEE) on regression tasks."""
    grid: list[float | list[float] | dict[str, Any]] | None = None
    """Settings to sweep: numbers (the policy's one parameter, e.g. entropy thresholds; a list of
    L-1 numbers is a per-layer threshold) or tables ({ patience = 2, threshold = 0.9 }); default: the
    policy's own grid (DeeBERT's for entropy)."""
    calibrate_split: str = "dev"
    target_time_pct: float | None = Field(None, gt=0, le=100)
    max_drop: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "ExitConfig":
        if self.target_time_pct is not None and self.max_drop is not None:
            raise ValueError("set at most one of target_time_pct and max_drop")
        return self


class OutputConfig(StrictModel):
    run_name: str | None = None
    """Default: the recipe file's stem."""
    root: str = "results"
    evaluate_splits: list[str] = Field(default_factory=lambda: ["dev"])
    """Splits traced and evaluated right after training (empty: none)."""
    calibrate: bool = True
    """After training, calibrate on exit.calibrate_split when a target or max_drop is set."""
    report: bool = True
    """After training, write the run report."""
    bootstrap: int = Field(1000, ge=0)
    """Resamples of the percentile bootstrap behind every interval (operating points, layer-wise
    metrics; eebench.intervals); 0: no intervals. `--bootstrap N` overrides it per command."""
    trackers: list[str] = Field(default_factory=list)
    """Experiment trackers accelerate knows (e.g. ["tensorboard"], ["wandb"]): step losses and every
    exit's per-epoch dev metric, written under <run>/tracking/. Off by default."""


class Recipe(StrictModel):
    description: str = ""
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    tasks: list[TaskEntry] = Field(default_factory=list)
    """Multitask (BERTer): one shared backbone, a head per task per exit, the tasks trained one after
    the other within every epoch. Give either [task] or [[tasks]]."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    exit: ExitConfig = Field(default_factory=ExitConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _check_tasks(self) -> "Recipe":
        if not self.tasks:
            return self
        if "task" in self.model_fields_set:
            raise ValueError("give either [task] (one task) or [[tasks]] (multitask), not both")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"a task appears twice in [[tasks]] ({', '.join(names)}); list each once")
        return self

    @property
    def is_multitask(self) -> bool:
        return bool(self.tasks)

    def task_recipe(self, name: str, regression: bool = False, lte_head: bool = True) -> "Recipe":
        """The single-task recipe of one task of a multitask recipe: what its sub-run records
        (eebench.recipe_io.task_recipe fills ``regression`` from the task registry and ``lte_head``
        from the strategy). A regression task exits by its LTE head, or by patience without one."""
        entry = next(t for t in self.tasks if t.name == name)

        train = self.train.model_copy(update={
            "strategy": entry.strategy or self.train.strategy,
            "args": entry.args if entry.args is not None
            else (self.train.args if entry.strategy in (None, self.train.strategy) else {}),
            "smart": entry.smart or self.train.smart})
        policy = entry.policy or (("lte" if lte_head else "patience") if regression else self.exit.policy or "entropy")
        task = TaskConfig(**entry.model_dump(include=set(TaskConfig.model_fields)))
        return self.model_copy(update={"task": task, "tasks": [], "train": train,
                                       "exit": self.exit.model_copy(update={"policy": policy, "grid": None}
                                                                    if policy != self.exit.policy else {})})

    def run_dir(self, default_name: str) -> Path:
        return Path(self.output.root) / (self.output.run_name or default_name)
