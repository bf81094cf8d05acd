"""A paper table's spec (``eebench/report/specs/<table-id>.toml``), validated at load: the paper's rows
(methods) and columns (tasks), which recipe fills which cell (``recipes.<set>`` path patterns with
``{task}`` and ``{method}``), how a measured cell is read from its run (``rules``) and the derived
columns. Also where a recipe's runs are (its folder, its seeded folders)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from eebench.errors import UserError
from eebench.recipe import StrictModel
from eebench.recipe_io import load_recipe
from eebench.recipe_text import describe_validation_error
from eebench.report.paper import ALIASES
from eebench.seeds import SEED_SUFFIX

SETS = ("paper", "cpu")
"""Recipe sets: ``paper`` = the papers' settings (BERT-base, GPU), ``cpu`` = MiniLM-L6 on local data files."""


class Rule(StrictModel):
    """How a measured cell is read from its run's dev trace."""

    value: Literal["last_exit", "operating_point"] = "operating_point"
    policy: str = "entropy"
    setting: dict | None = None
    """A fixed policy setting (e.g. CsdBERT's θ and R); otherwise calibrate to a target below."""
    max_drop: float | None = Field(None, ge=0)
    """Least time% whose metric ≥ reference − max_drop (reference: see relative_to)."""
    relative_to: Literal["self", "base"] = "self"
    """The run's own last exit, or the table's base row in the same column (comparable accuracy)."""
    target_time_pct: float | None = Field(None, gt=0, le=100)
    match_paper: bool = False
    """Calibrate to the time% (or 100 / speed-up) the paper prints for this cell: the cell compares the
    metric at the paper's operating point."""
    at_time_pct: float | None = Field(None, gt=0, le=100)
    """Read at the setting whose time% is nearest this one (a speed-up the paper prints elsewhere for
    the same cells: CsdBERT's Table 5 rows are its Tables 3-4 cells at 1.96x, time% 100 / 1.96)."""
    fix: dict = Field(default_factory=dict)
    """Policy parameters held at these values while the rest are swept (CsdBERT fixes theta = 0.06 in
    its Section 4, so only the count R varies to reach a time%)."""
    match_paper_metric: bool = False
    """Calibrate to the metric the paper prints for this cell (least time% whose metric reaches it): the
    cell compares time% at the paper's accuracy."""


class Column(StrictModel):
    task: str
    """eebench task name; also the ``{task}`` of recipe paths."""
    split: str = "dev"
    calibrate_split: str | None = None
    """Fit the rule on this split and apply its setting to ``split`` (e.g. dev → unlabelled test)."""
    policy: str | None = None
    """The exit policy of this column's operating points when it differs from the rule's (e.g. "lte"
    for a regression task, as BERTer exits)."""
    same_point_as: str | None = None
    """Another column of the same row whose chosen setting this column applies (RomeBERT prints one
    time% per MNLI cell: the point is picked on matched and applied to mismatched)."""


class Reading(StrictModel):
    """A named alternative to a table's default rules (``eebench report --table ID --reading NAME``)."""

    rules: dict[str, Rule]
    notes: str = ""


class Derived(StrictModel):
    kind: Literal["mean", "dev_score"]
    """mean: plain mean of the row's task columns; dev_score: CS224N's (SST acc + para acc + (r + 1) / 2) / 3."""
    parts: dict[Literal["sentiment", "paraphrase", "similarity"], str] = Field(default_factory=dict)
    """dev_score: the column of each part (e.g. sentiment = "SST-5")."""


class TableSpec(StrictModel):
    id: str
    title: str
    digits: int = 1
    fraction: bool = False
    """The paper prints fractions (BERTer): our percentages are divided by 100."""
    columns: dict[str, Column]
    methods: dict[str, str]
    """Paper row label → ``{method}`` of recipe paths (rows not listed are the paper's numbers only)."""
    rules: dict[str, Rule] = Field(default_factory=lambda: {"*": Rule()})
    """Paper method label or row group → rule (a method's rule wins); ``*`` for the rest."""
    base_group: str = "base"
    derived: dict[str, Derived] = Field(default_factory=dict)
    recipes: dict[str, str] = Field(default_factory=dict)
    """Recipe set (paper, cpu) → path pattern, e.g. recipes/compare/{task}_{method}.toml."""
    notes: str = ""
    train_time: bool = False
    """Show each run's training time (h:mm:ss) beside the paper's (BERTer prints hh:mm)."""
    reading: str = "default"
    """The name of the rules in force (``default``: ``rules`` above)."""
    readings: dict[str, Reading] = Field(default_factory=dict)
    """Named alternative rules, chosen with ``--reading NAME``."""

    def with_reading(self, name: str | None) -> "TableSpec":
        """This spec under the named reading's rules (its notes appended); None or "default": as is."""
        if name in (None, "default", self.reading):
            return self
        if name not in self.readings:
            choices = ", ".join(["default", *self.readings]) if self.readings else "default (no other)"
            raise UserError(f"--reading {name}: table {self.id} has no reading {name!r}; choose one of {choices}")
        reading = self.readings[name]
        notes = f"{self.notes}\n\nReading {name!r}: {reading.notes}" if reading.notes else self.notes
        return self.model_copy(update={"rules": reading.rules, "reading": name, "notes": notes})

    def rule(self, group: str, method: str, column: str | None = None) -> Rule:
        rule = self.rules.get(method) or self.rules.get(str(group)) or self.rules.get("*") or Rule()
        policy = self.columns[column].policy if column in self.columns else None
        return rule.model_copy(update={"policy": policy}) if policy and rule.value == "operating_point" else rule

    def recipe_path(self, set_name: str, method: str, column: str) -> Path | None:
        pattern = self.recipes.get(set_name)
        if pattern is None:
            return None
        from eebench.paths import resolve_recipe

        return resolve_recipe(pattern.format(task=self.columns[column].task, method=self.methods[method]))


def spec_ids() -> list[str]:
    folder = resources.files("eebench").joinpath("report/specs")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_spec(table_id: str, reading: str | None = None) -> TableSpec:
    key = ALIASES.get(table_id, table_id)
    if key not in spec_ids():
        raise UserError(f"unknown table {table_id!r}; choose one of {', '.join(spec_ids())} "
                        f"(aliases: {', '.join(ALIASES)})")
    source = f"eebench/report/specs/{key}.toml"
    text = resources.files("eebench").joinpath(f"report/specs/{key}.toml").read_text(encoding="utf-8")
    try:
        spec = TableSpec.model_validate(tomllib.loads(text))
    except ValidationError as err:
        raise UserError(describe_validation_error(err, source)) from None
    for name, column in spec.columns.items():
        if column.same_point_as is not None and column.same_point_as not in spec.columns:
            raise UserError(f"{source}: columns.{name}.same_point_as = {column.same_point_as!r} is not a column")
    return spec.with_reading(reading)


# ----------------------------------------------------------------------------------- cells
def run_folder(recipe_path: Path, task: str | None = None) -> Path:
    """The run folder a recipe writes; for a multitask recipe, the folder of its ``task``."""
    recipe = load_recipe(recipe_path)
    folder = recipe.run_dir(recipe_path.stem)
    return folder / "tasks" / task if recipe.is_multitask and task else folder


def finished(folder: Path) -> bool:
    """A run folder whose finetune completed (status.json state "finished"; "done" in older folders)."""
    from eebench.run.folder import run_status

    return run_status(folder).finished


def seed_folders(folder: Path) -> list[Path]:
    """The seeded runs of a recipe (``finetune --seeds``, ``reproduce --seeds``): ``<run>-seed<S>``
    beside the run folder (for a multitask task folder, ``<run>-seed<S>/tasks/<task>``)."""
    if folder.parent.name == "tasks":
        parent = folder.parent.parent
        return [p / "tasks" / folder.name for p in sorted(parent.parent.glob(f"{parent.name}-seed*"))
                if SEED_SUFFIX.search(p.name)]
    return [p for p in sorted(folder.parent.glob(f"{folder.name}-seed*")) if SEED_SUFFIX.search(p.name)]
