"""Every run records what it was made with; the run report shows it and compare warns when runs differ."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from conftest import ROOT, quickstart_overrides
from eebench.cli import app


def _train(tmp_path, name):
    args = ["finetune", str(ROOT / "recipes" / "quickstart.toml")]
    for override in [*quickstart_overrides(tmp_path, name, report=True), "train.epochs=0", "train.args.stage2_epochs=0"]:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return tmp_path / name


def test_provenance_is_recorded_shown_and_compared(tmp_path):
    import torch
    import transformers

    a, b = _train(tmp_path, "a"), _train(tmp_path, "b")
    p = json.loads((a / "status.json").read_text())["provenance"]
    assert p["torch"] == torch.__version__ and p["transformers"] == transformers.__version__
    assert p["eebench"] and p["device"] == "cpu" and p["model"] == {"kind": "random", "model_type": "bert"}
    assert p["eebench_commit"] is None or len(p["eebench_commit"].removesuffix("+dirty")) == 40
    report = (a / "report" / "report.md").read_text()
    assert "## Provenance" in report and f"torch {torch.__version__}" in report
    assert "dev: 120 examples from synthetic" in report
    runner = CliRunner()
    same = runner.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert same.exit_code == 0 and "differ" not in same.output
    status = json.loads((b / "status.json").read_text())
    status["provenance"]["torch"] = "2.0.0"
    (b / "status.json").write_text(json.dumps(status))
    differs = runner.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert differs.exit_code == 0
    assert f"torch differs: a {torch.__version__}, b 2.0.0" in " ".join(differs.output.split())


def test_a_local_model_folder_is_identified_by_its_weights(tmp_path):
    from eebench.provenance import model_revision, weights_sha256
    from eebench.recipe import ModelConfig

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    revision = model_revision(ModelConfig(name=str(tmp_path), source="path"))
    assert revision["kind"] == "folder" and revision["weights_sha256"] == weights_sha256(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert weights_sha256(tmp_path) != revision["weights_sha256"]
