"""The run folder: its layout and its life (opened, marked, read back); its records are
eebench.run.records, who may write it eebench.run.ownership.

Layout (docs/run-folder.md):
    recipe.toml, recipe.json   the recipe as given and as resolved (after --set)
    status.json                Status: training / trained / finished / failed, timings, the error
    train_log.jsonl            step losses and per-epoch summaries
    checkpoint/                training state while training (removed once the model is saved)
    model/                     weights (safetensors), backbone config, tokenizer, exits.json
    traces/<split>.npz         all exits' logits per example, keyed (see eebench.trace_data)
    eval/<split>/              layerwise.{json,csv} (Layerwise), sweep_<policy>.csv, exits_<policy>.csv,
                               operating_<policy>.json (OperatingPoint), speed_<policy>.json (Speed)
    calibration/<policy>.json  Calibration: the chosen setting, its target, split and trace key
    report/                    tables (md, tex, csv) and figures (png, pdf)

A run folder has one writer at a time (eebench.run.ownership).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eebench.data.tasks import TaskSpec, task_spec
from eebench.errors import UserError
from eebench.io import read_json
from eebench.run.ownership import describe_owner, owner
from eebench.run.records import Calibration, Layerwise, OperatingPoint, Speed, Status, unreadable_reason
from eebench.recipe import Recipe
from eebench.recipe_io import validate_recipe

MULTITASK_MARKER = "multitask.json"


# ----------------------------------------------------------------------------------- the run
@dataclass
class Run:
    dir: Path
    recipe: Recipe
    model_task: str | None = None
    """Set for one task of a multitask run (``<run>/tasks/<task>/``): the model is the shared one in
    ``<run>/model``, seen through this task's heads."""
    final: Path | None = field(default=None, repr=False)
    """Where the run folder goes when it is built elsewhere first (an --overwrite builds beside the
    old run and swaps it in at the end)."""
    data_name: str | None = None
    """An evaluation on other data than the recipe's (``evaluate --data-dir``): its traces, results and
    calibrations are stored as ``<split>@<data_name>`` beside the run's own, never over them."""

    @property
    def name(self) -> str:
        return (self.final or self.dir).name

    def shown(self, path: Path | None = None) -> Path:
        """``path`` (default: the run folder) where the user will find it once the run is in place."""
        path = self.dir if path is None else Path(path)
        if self.final is not None and path.is_relative_to(self.dir):
            return self.final / path.relative_to(self.dir)
        return path

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.recipe.task)

    @property
    def model_dir(self) -> Path:
        return self.dir.parent.parent / "model" if self.model_task else self.dir / "model"

    @property
    def owner_dir(self) -> Path:
        """The folder whose lock covers this run (a multitask run's parent for its tasks)."""
        return self.dir.parent.parent if self.model_task else self.dir

    def split_name(self, split: str) -> str:
        return f"{split}@{self.data_name}" if self.data_name else split

    def trace_path(self, split: str) -> Path:
        return self.dir / "traces" / f"{self.split_name(split)}.npz"

    def eval_dir(self, split: str) -> Path:
        return self.dir / "eval" / self.split_name(split)

    def calibration_path(self, policy: str) -> Path:
        return self.dir / "calibration" / f"{self.split_name(policy)}.json"

    def calibrations(self) -> list[Calibration]:
        """The run's calibrations; on other data, one calibrated on that data replaces the run's own."""
        found = {}
        for path in sorted((self.dir / "calibration").glob("*.json")):
            policy, _, data = path.stem.partition("@")
            if data in ("", self.data_name):
                found[(policy, bool(data))] = Calibration.load(path, self.dir)
        return [found.get((p, True)) or found[(p, False)] for p in dict.fromkeys(p for p, _ in found)]

    def evaluated_splits(self) -> list[str]:
        return sorted(p.name for p in (self.dir / "eval").glob("*") if p.is_dir())

    def layerwise(self, split: str) -> list[dict] | None:
        path = self.eval_dir(split) / "layerwise.json"
        return Layerwise.load(path, self.dir, split).root if path.is_file() else None

    def operating_points(self, split: str) -> list[OperatingPoint]:
        return [OperatingPoint.load(p, self.dir, split) for p in sorted(self.eval_dir(split).glob("operating_*.json"))]

    def speeds(self, split: str) -> list[Speed]:
        return [Speed.load(p, self.dir, split) for p in sorted(self.eval_dir(split).glob("speed_*.json"))]

    def mark(self, **fields) -> None:
        status = run_status(self.dir)
        Status.model_validate({**status.dump(), **fields}).save(self.dir / "status.json")


def run_status(folder: Path) -> Status:
    path = Path(folder) / "status.json"
    return Status.load(path, folder) if path.is_file() else Status()


def training_unfinished(folder: Path) -> bool:
    return run_status(folder).training_unfinished


def read_recipe(folder: Path) -> Recipe:
    """The resolved recipe a run folder was written with."""
    path = Path(folder) / "recipe.json"
    if not path.is_file():
        raise UserError(f"{folder} is not a run folder (no recipe.json); runs are written by "
                        f"eebench finetune to results/<run-name>/")
    try:
        data = read_json(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is unreadable ({unreadable_reason(err)}); its recipe.toml is beside it: "
                        f"run eebench finetune {Path(folder) / 'recipe.toml'} --overwrite to redo the run") from None
    return validate_recipe(data, source=str(path))


def open_run(path: str | Path, data_dir: str | None = None, data_name: str | None = None) -> Run:
    """A finished (trained) run folder, ready for evaluate / calibrate / speed / report. With
    ``data_dir`` (other data than the recipe's) results are stored under ``<split>@<data_name>``
    (default: the data folder's name)."""
    folder = Path(path)
    recipe = read_recipe(folder)
    remember_data_root(folder)
    if recipe.is_multitask:
        tasks = ", ".join(str(folder / "tasks" / t.name) for t in recipe.tasks)
        raise UserError(f"{folder} is a multitask run; each task is a run folder of its own: {tasks}")
    if data_dir and _own_data(folder, recipe, Path(data_dir)):
        recipe.task.data_dir, data_name = str(Path(data_dir).resolve()), None
    elif data_dir:
        recipe.task.data_dir = data_dir
        data_name = data_name or Path(data_dir).resolve().name
        if not data_name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise UserError(f"--as {data_name!r}: use letters, digits, '-', '_' or '.' for the evaluation name")
    else:
        data_name = None
    marker = folder / MULTITASK_MARKER
    parent = folder.parent.parent if marker.is_file() else folder
    status = run_status(parent)
    if status.training_unfinished:
        if owner(parent) is not None:
            raise UserError(f"{parent} is still training ({describe_owner(owner(parent))}); wait for it to finish")
        raise UserError(f"{parent} is an unfinished run (status {status.state}: its training was killed, "
                        f"interrupted or failed); continue it with: eebench resume {parent}")
    return Run(folder, recipe, read_json(marker)["task"] if marker.is_file() else None, data_name=data_name)


def remember_data_root(folder: Path) -> None:
    """Search the data root the run was trained with when the command was given none."""
    from eebench.paths import data_root, set_data_root

    status = run_status(_status_folder(Path(folder)))
    if data_root() is None and status.data_root and Path(status.data_root).is_dir():
        set_data_root(status.data_root)


def _status_folder(folder: Path) -> Path:
    return folder.parent.parent if (folder / MULTITASK_MARKER).is_file() else folder


def _own_data(folder: Path, recipe: Recipe, data_dir: Path) -> bool:
    """``--data-dir`` names the folder the run's own splits were read from (the recipe's data_dir,
    or where the data root led): it is the run's data, not other data to be stored apart."""
    data_dir = data_dir.resolve()
    if recipe.task.data_dir and data_dir == Path(recipe.task.data_dir).resolve():
        return True
    sources = run_status(folder).data.values()
    return any(Path(s.get("source", "")).parent == data_dir for s in sources if not s.get("source", "").startswith(
        ("hub:", "synthetic")))

