"""Wrong answers at the edges, each pinned: what a command suggests must itself work, stored numbers
keep their type."""

from __future__ import annotations

import json

import pytest

from eebench.errors import UserError


def test_speed_with_a_classification_policy_on_a_regression_run_names_the_policies_that_work(tmp_path):
    from eebench.pipeline.speed import speed
    from eebench.recipe_io import load_recipe
    from eebench.run.folder import Run

    path = tmp_path / "r.toml"
    path.write_text('[model]\nsource = "random"\nname = "bert"\n[task]\nname = "stsb"\n')
    with pytest.raises(UserError) as err:
        speed(Run(tmp_path / "run", load_recipe(path)), "entropy", "dev")
    text = str(err.value)
    assert "does not apply to regression tasks" in text and "patience" in text and "calibrate" not in text


def test_operating_point_histograms_are_counts(tmp_path):
    from eebench.run.records import OperatingPoint

    path = tmp_path / "operating_entropy.json"
    path.write_text(json.dumps({"policy": "entropy", "setting": {"threshold": 0.3}, "time_pct": 50.0,
                                "speedup": 2.0, "histogram": [1089.0, 3.0]}))  # as older runs stored them
    point = OperatingPoint.load(path)
    assert point.histogram == [1089, 3] and all(type(x) is int for x in point.histogram)
    point.save(path)
    assert json.loads(path.read_text())["histogram"] == [1089, 3]
    assert "1089.0" not in path.read_text()
