"""Run-folder records declare every field: unknown fields are refused in one line naming the file and
the key, a newer schema says so, and what older versions wrote (no schema_version) is upgraded."""

import json

import pytest

from eebench.errors import UserError
from eebench.run.records import SCHEMA_VERSION, Calibration, OperatingPoint, Speed, Status


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_an_unknown_field_is_one_line_naming_the_file_and_the_key(tmp_path):
    path = _write(tmp_path / "status.json", {"schema_version": SCHEMA_VERSION, "state": "finished", "colour": "red"})
    with pytest.raises(UserError) as err:
        Status.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: colour: a field this eebench does not know") and "\n" not in msg
    cal = _write(tmp_path / "entropy.json", {"schema_version": SCHEMA_VERSION, "policy": "entropy",
                                            "setting": {"threshold": 0.3}, "split": "dev", "thresold": 1})
    with pytest.raises(UserError, match=r"entropy.json: thresold: a field this eebench does not know"):
        Calibration.load(cal)


def test_fields_whose_names_vary_are_declared_by_pattern(tmp_path):
    point = {"schema_version": SCHEMA_VERSION, "policy": "entropy", "setting": {"threshold": 0.3},
             "time_pct": 50.0, "speedup": 2.0, "acc": 81.0, "f1": 80.0}
    assert OperatingPoint.load(_write(tmp_path / "operating_entropy.json", point)).model_extra == {"acc": 81.0, "f1": 80.0}
    with pytest.raises(UserError, match="accuracy: a field this eebench does not know"):
        OperatingPoint.load(_write(tmp_path / "operating_x.json", {**point, "accuracy": 81.0}))
    speed = {"policy": "entropy", "setting": {"threshold": 0.3}, "split": "dev", "time_pct": 50.0, "ideal_speedup": 2.0,
             "batch_1": {}, "batch_32": {"engine_s": 1.0}}
    assert Speed.load(_write(tmp_path / "speed_entropy.json", speed)).model_extra == {"batch_32": {"engine_s": 1.0}}
    with pytest.raises(UserError, match="batchsize: a field this eebench does not know"):
        Speed.load(_write(tmp_path / "speed_y.json", {**speed, "schema_version": SCHEMA_VERSION, "batchsize": 4}))


def test_a_newer_schema_is_refused_and_an_older_record_upgraded(tmp_path):
    with pytest.raises(UserError, match=rf"schema_version 99 is newer than this eebench reads \({SCHEMA_VERSION}\); upgrade"):
        Status.load(_write(tmp_path / "new.json", {"schema_version": 99, "state": "finished"}))
    old = Status.load(_write(tmp_path / "old.json", {"state": "done", "seed": 42}))  # version 1: no schema_version
    assert old.state == "finished" and old.schema_version == SCHEMA_VERSION and "seed" not in old.model_dump()
    cal = Calibration.load(_write(tmp_path / "cal.json", {"policy": "entropy", "threshold": 0.4, "split": "dev"}))
    assert cal.setting == {"threshold": 0.4}
    assert json.loads(json.dumps(cal.dump()))["schema_version"] == SCHEMA_VERSION


def test_a_version_1_record_keeps_its_varying_fields_and_drops_the_undeclared_rest(tmp_path):
    old = {"policy": "entropy", "threshold": 0.3, "time_pct": 50.0, "speedup": 2.0, "acc": 81.0, "note": "x"}
    point = OperatingPoint.load(_write(tmp_path / "operating_entropy.json", old))
    assert point.model_extra == {"acc": 81.0} and point.setting == {"threshold": 0.3}


def test_a_version_2_record_reads_without_the_version_3_fields(tmp_path):
    """Operating points and calibrations written before intervals, transfer checks and guarantees."""
    point = OperatingPoint.load(_write(tmp_path / "operating_entropy.json", {
        "schema_version": 2, "policy": "entropy", "setting": {"threshold": 0.3}, "time_pct": 50.0, "speedup": 2.0,
        "acc": 81.0}))
    assert point.intervals == {} and point.transfer is None and point.schema_version == SCHEMA_VERSION
    cal = Calibration.load(_write(tmp_path / "entropy.json", {"schema_version": 2, "policy": "entropy",
                                                            "setting": {"threshold": 0.3}, "split": "dev"}))
    assert cal.guarantee is None
