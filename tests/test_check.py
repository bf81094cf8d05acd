"""eebench check: passes on the run it was recorded from, fails when a number is perturbed."""

import json

import pytest
from typer.testing import CliRunner

from conftest import ROOT, quickstart_overrides
from eebench.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("check")
    args = ["finetune", str(ROOT / "recipes" / "quickstart.toml")]
    for o in quickstart_overrides(tmp, "c") + ["output.report=false"]:
        args += ["--set", o]
    assert runner.invoke(app, args).exit_code == 0
    return tmp / "c"


def test_check_passes_on_its_own_reference_and_fails_when_perturbed(run_dir, tmp_path):
    ref = tmp_path / "ref.json"
    assert runner.invoke(app, ["check", str(run_dir), "--record", str(ref)]).exit_code == 0
    result = runner.invoke(app, ["check", str(run_dir), "--reference", str(ref)])
    assert result.exit_code == 0, result.output
    assert "check passed" in result.output
    data = json.loads(ref.read_text())
    key = next(k for k in data["numbers"] if k.endswith("layer6/acc"))
    data["numbers"][key]["value"] += 5.0  # beyond the 2-point tolerance
    ref.write_text(json.dumps(data))
    result = runner.invoke(app, ["check", str(run_dir), "--reference", str(ref)])
    assert result.exit_code == 1
    assert "MOVED" in result.output and "check failed" in result.output
    data["numbers"][key]["value"] -= 4.0  # within tolerance again (+1.0)
    ref.write_text(json.dumps(data))
    assert runner.invoke(app, ["check", str(run_dir), "--reference", str(ref)]).exit_code == 0


def test_check_errors(run_dir, tmp_path):
    result = runner.invoke(app, ["check", str(run_dir), "--reference", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "not found" in result.output
    result = runner.invoke(app, ["check", str(run_dir)])
    assert result.exit_code == 2 and "--reference" in result.output
