"""The run folder's typed records (status.json, calibration/<policy>.json, eval/<split>/operating_<policy>.json,
speed_<policy>.json, layerwise.json): every field declared, each record loading and validating itself,
upgrading what older eebench versions wrote, and turning an unreadable file into one UserError naming
the file and the command that writes it again."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, RootModel, ValidationError, field_validator, model_validator

from eebench.errors import UserError
from eebench.io import write_json


SCHEMA_VERSION = 3
"""The version of the records below. 1: no ``schema_version`` field, undeclared fields allowed (every
eebench before it); 2: every field declared, unknown fields refused; 3: operating points carry bootstrap
``intervals`` and a ``transfer`` check, calibrations a ``guarantee``, layer-wise rows ``<metric>_lo`` /
``_hi`` (all optional: a version 2 record reads as it is). ``Record.upgrade`` reads version 1."""


class Record(BaseModel):
    """A JSON file of the run folder: every field declared, a field it does not know refused (a file
    written by a newer eebench, or edited by hand, says so instead of being half read). Subclasses name
    the command that writes them (``fix``) and turn what an older version wrote into this version
    (``upgrade``)."""

    model_config = ConfigDict(extra="forbid")
    fix: ClassVar[str] = "re-run the eebench command that wrote it"
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def upgrade(cls, data: Any) -> Any:
        """The record as this version stores it, from what an older version wrote."""
        return data

    @classmethod
    def upgrade_any(cls, data: Any) -> Any:
        """Version 1 → 2: ``upgrade``, then the fields version 1 wrote without declaring them are dropped
        (those ``varying_field`` accepts are kept, Speed's ``batch_<B>``); a version newer than this
        eebench's is refused."""
        if not isinstance(data, dict):
            return cls.upgrade(data)
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r} is newer than this eebench reads ({SCHEMA_VERSION}); "
                             f"upgrade eebench")
        data = cls.upgrade(data)
        if version < 2:
            data = {k: v for k, v in data.items() if k in cls.model_fields or cls.varying_field(k)}
        return {**data, "schema_version": SCHEMA_VERSION}

    @classmethod
    def varying_field(cls, key: str) -> bool:
        """Whether ``key`` is one of the record's fields whose names vary (declared by a rule, not one
        by one); such records set ``extra="allow"`` and every other undeclared field is refused."""
        return False

    @model_validator(mode="after")
    def _only_declared_fields(self) -> "Record":
        for key in self.model_extra or {}:
            if not self.varying_field(key):
                raise ValueError(f"{key}: a field this eebench does not know")
        return self

    @classmethod
    def load(cls, path: Path, run: str | Path | None = None, split: str | None = None):
        return _load_record(cls, path, run, split)

    def save(self, path: Path) -> Path:
        return write_json(path, self.dump())

    def dump(self) -> Any:
        return self.model_dump(mode="json")


def _load_record(cls, path: Path, run, split):
    path = Path(path)
    policy = path.stem.removeprefix("operating_").removeprefix("speed_")
    fix = cls.fix.format(run=run if run is not None else path.parent, split=split or path.parent.name, policy=policy)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is unreadable ({unreadable_reason(err)}); {fix}") from None
    except OSError as err:
        raise UserError(f"{path} cannot be read ({err.strerror}); {fix}") from None
    try:
        return cls.model_validate(cls.upgrade_any(data))
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        what = ("a field this eebench does not know" if first["type"] == "extra_forbidden"
                else first["msg"].removeprefix("Value error, "))
        raise UserError(f"{path}: {key}: {what}; {fix}") from None
    except ValueError as err:  # upgrade_any: a newer schema
        raise UserError(f"{path}: {err}") from None


def unreadable_reason(err: Exception) -> str:
    """Why a JSON file could not be read, in words (not JSON at line:column, not UTF-8 at byte)."""
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON: {err.msg} at line {err.lineno}, column {err.colno}"
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text at byte {err.start}"
    return str(err)


def check_setting(policy: str, setting: dict[str, Any]) -> dict[str, Any]:
    """A stored setting against its policy's parameters: a key the policy does not take, or a parameter it
    needs and has no default for, is an error naming the key (not a KeyError later)."""
    from eebench.policies import POLICIES

    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r} (known: {', '.join(sorted(POLICIES))})")
    spec = POLICIES[policy]
    for key in setting:
        if key not in spec.params:
            raise ValueError(f"policy {policy!r} has no parameter {key!r} (its parameters: {', '.join(spec.params)})")
    for key in spec.params:
        if key not in setting and key not in spec.defaults:
            raise ValueError(f"{key!r} missing: policy {policy!r} needs it")
    return setting


def _with_setting(data: Any) -> Any:
    """Calibration / operating-point records of early runs stored a bare ``threshold``."""
    if isinstance(data, dict) and "setting" not in data and "threshold" in data:
        data = {**data, "setting": {"threshold": data["threshold"]}}
    return data


class Status(Record):
    fix: ClassVar[str] = "the run's state is unknown: start it again with eebench finetune RECIPE --overwrite"
    state: Literal["training", "trained", "finished", "failed", "interrupted"] | None = None
    """``interrupted``: stopped by Ctrl-C (``trained`` says whether training had ended)."""
    started: str | None = None
    trained: bool | None = None
    train_seconds: float | None = None
    total_seconds: float | None = None
    error: str | None = None
    processes: int | None = None
    """Training processes (ranks)."""
    global_batch: int | None = None
    mixed_precision: str | None = None
    device: str | None = None
    device_name: str | None = None
    tf32: bool | None = None
    resumed: int | None = None
    """How many times training was resumed from a checkpoint."""
    multitask: bool | None = None
    """A task folder of a multitask run (its parent holds the run's status)."""
    provenance: dict[str, Any] | None = None
    """What the run was made with (eebench.provenance.collect): versions, commit, device, model revision."""
    data_root: str | None = None
    """The data root the run was trained with (``--data-root`` / EEBENCH_DATA): later commands on the
    run search it when they are given none."""
    data: dict[str, dict[str, Any]] = {}
    """Per split read for the run: ``source`` (file, hub dataset and split, or synthetic),
    ``fingerprint`` (eebench.data.examples.Examples.fingerprint) and ``n``."""

    def record_split(self, split: str, examples, fingerprint: str | None = None) -> dict:
        """``data`` with this split's record added (``fingerprint``: when already computed)."""
        return {**self.data, split: {"source": examples.source, "fingerprint": fingerprint or examples.fingerprint(),
                                     "n": len(examples)}}

    @classmethod
    def upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("state") == "done":
            data = {**data, "state": "finished"}
        return data

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    @property
    def training_unfinished(self) -> bool:
        """Training started and never completed (killed, failed, or still running)."""
        return self.state == "training" or (self.state in ("failed", "interrupted") and not self.trained)


class Calibration(Record):
    fix: ClassVar[str] = "re-run eebench calibrate {run} --policy {policy} (with your target)"
    policy: str
    setting: dict[str, Any]
    split: str
    target_time_pct: float | None = None
    max_drop: float | None = None
    metric: str | None = None
    last_exit_metric: float | None = None
    trace_key: str | None = None
    """The key of the trace it was fitted on; another key means the model or data changed since."""
    guarantee: dict[str, Any] | None = None
    """When fitted with --guarantee: eps, delta, what the risk is, the calibration size, the setting's
    empirical risk and p-value, and the point-estimate setting's time% it gives up (eebench.guarantee)."""

    @classmethod
    def upgrade(cls, data: Any) -> Any:
        return _with_setting(data)

    @field_validator("setting")
    @classmethod
    def _setting_fits_policy(cls, setting, info):
        return check_setting(info.data["policy"], setting) if "policy" in info.data else setting


class OperatingPoint(Record):
    fix: ClassVar[str] = "re-run eebench evaluate {run} --split {split}"
    policy: str
    setting: dict[str, Any]
    calibrated_on: str | None = None
    time_pct: float
    speedup: float
    mean_exit_layer: float | None = None
    histogram: list[int] = []
    """Examples leaving at each exit (1..L); older runs stored counts as floats (1089.0): read as ints."""
    trace_key: str | None = None
    """Key of the trace of this split the point was computed on."""
    calibration_key: str | None = None
    """Key of the trace the calibration was fitted on."""
    stale: str | None = None
    """Why the point may not describe the current model (e.g. its calibration was fitted on an older trace)."""
    submission: str | None = None
    """The GLUE submission file written at this point (test splits), relative to the run folder."""
    macs: float | None = None
    """Analytic MACs per example at these exits (eebench.maths.flops), and its parts below."""
    macs_backbone: float | None = None
    macs_heads: float | None = None
    macs_full_model: float | None = None
    macs_saved_fraction: float | None = None
    flops: float | None = None
    intervals: dict[str, list[float | None]] = {}
    """name (a metric, ``time_pct``) → [low, high]: its 95% bootstrap interval over the split's examples
    (eebench.intervals); empty when not computed (older records, or --bootstrap 0)."""
    bootstrap: dict[str, Any] | None = None
    """How the intervals were computed (resamples, seed, level)."""
    transfer: dict[str, Any] | None = None
    """A setting calibrated on another split, applied here: per number (time%, metrics) its value on the
    calibration split with that split's interval, the value realised here and whether it fell outside;
    the target it was calibrated to (eebench.pipeline.calibrate.transfer)."""
    model_config = ConfigDict(extra="allow")

    @classmethod
    def varying_field(cls, key: str) -> bool:
        """The task's metrics (eebench.metrics.METRICS names, in percent) are the fields whose names vary."""
        from eebench.metrics import METRICS

        return key in METRICS

    @classmethod
    def upgrade(cls, data: Any) -> Any:
        return _with_setting(data)

    @field_validator("setting")
    @classmethod
    def _setting_fits_policy(cls, setting, info):
        return check_setting(info.data["policy"], setting) if "policy" in info.data else setting


class Speed(Record):
    """What `eebench speed` measured (eebench.engine.benchmarking.summary): the ideal and measured speed-ups, at batch
    1 (``batch_1``) and at the batch size asked for (``batch_<B>``, the one field whose name varies)."""

    model_config = ConfigDict(extra="allow")
    fix: ClassVar[str] = "re-run eebench speed {run} --split {split} --policy {policy}"
    policy: str
    setting: dict[str, Any]
    calibrated_on: str | None = None
    split: str
    examples: int | None = None
    mean_exit_layer: float | None = None
    time_pct: float
    ideal_speedup: float
    batch_1: dict[str, Any] = {}
    threads: int | None = None
    torch: str | None = None
    machine: str | None = None
    device: str | None = None
    device_name: str | None = None
    timer: str | None = None
    sync_us_per_layer: float | None = None
    full_ms_per_layer_batch_1: float | None = None
    warmed_shapes: int | list | None = None
    precision: str | None = None
    """The engine's autocast dtype: fp32, bf16 or fp16 (eebench.device.Precision)."""
    tf32: bool | None = None
    agreement_floor: float | None = None
    """The least share of exits that must equal the trace's in this precision (eebench.device.AGREEMENT_FLOOR)."""

    @classmethod
    def varying_field(cls, key: str) -> bool:
        return re.fullmatch(r"batch_\d+", key) is not None

    @field_validator("setting")
    @classmethod
    def _setting_fits_policy(cls, setting, info):
        return check_setting(info.data["policy"], setting) if "policy" in info.data else setting


class Layerwise(RootModel[list[dict[str, int | float | None]]]):
    """One row per exit: ``layer`` and every metric of the task, in percent. A metric that is
    undefined (the correlation of a constant prediction) is NaN in memory and null in the file."""

    fix: ClassVar[str] = "re-run eebench evaluate {run} --split {split}"

    @classmethod
    def upgrade_any(cls, data: Any) -> Any:
        """The rows as stored (no schema: a list of rows per exit, unchanged since version 1)."""
        return data

    @model_validator(mode="after")
    def _nan(self) -> "Layerwise":
        for row in self.root:
            for k, v in row.items():
                if v is None:
                    row[k] = float("nan")
        return self

    @classmethod
    def load(cls, path: Path, run: str | Path | None = None, split: str | None = None) -> "Layerwise":
        return _load_record(cls, path, run, split)

    def save(self, path: Path) -> Path:
        rows = [{k: None if isinstance(v, float) and v != v else v for k, v in row.items()} for row in self.root]
        return write_json(path, rows)


