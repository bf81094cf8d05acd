"""Every benchmark runs with tiny arguments, so none can rot unseen (an import that no longer exists,
an option that changed). These check that each one runs to its last line, not its numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHARED_DATA, quickstart_overrides

BENCH = ROOT / "benchmarks"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PYTHONPATH": str(ROOT)}


def _bench(name: str, *args, cwd: Path = ROOT, timeout: int = 300) -> str:
    done = subprocess.run([sys.executable, str(BENCH / name), *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_every_benchmark_has_a_smoke_test():
    here = Path(__file__).read_text()
    for script in BENCH.glob("*.py"):
        assert f'"{script.name}"' in here, f"{script.name} has no smoke run in {Path(__file__).name}"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from eebench.pipeline.finetune import finetune

    root = tmp_path_factory.mktemp("bench")
    return finetune(str(ROOT / "recipes" / "quickstart.toml"), quickstart_overrides(root, "b") +
                    ["output.report=false"]).dir


def test_engine_speed(run_folder):
    out = _bench("engine_speed.py", run_folder, "--limit", 12, "--rounds", 1, "--block", 4, "--batch", 4,
                 "--target-time-pct", 80, "--device", "cpu")
    assert "exits equal to the trace simulation" in out and "host round trip" in out


def test_engine_speed_per_family():
    out = _bench("engine_speed.py", "--family", "albert,llama", "--examples", "30", "--rounds", "1", "--block", "10",
                 "--device", "cpu")
    rows = [line for line in out.splitlines() if line.startswith(("albert", "llama"))]
    assert len(rows) == 2 and all("100.0%" in r for r in rows), out  # exits equal to the trace


def test_bootstrap_speed():
    out = _bench("bootstrap_speed.py", "--n", "2000", "--layers", "6", "--resamples", "200", "--repeat", "1")
    assert "layer-wise intervals" in out and "direct loop" in out


@pytest.mark.slow
def test_gpu_check_runs_its_cpu_parts(tmp_path):
    """Everything but the epoch and launch checks (tested below / by the launcher tests). `eebench speed`
    end to end runs the quickstart first (`--only speed` needs its run) and judges the trace agreement
    against fp32's floor; syncs counts the host reads of joint's training steps."""
    out = _bench("gpu.py", "--small", "--only", "precision,memory,engine,speed,syncs", "--device", "cpu",
                 "--work", tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("INFO versions: torch") and lines[1].startswith("INFO device: cpu")
    assert sum(x.startswith("PASS precision:") for x in lines) == 3  # romebert, metabert, joint + SMART in bf16
    assert any(x.startswith("SKIP memory:") for x in lines)
    assert sum(x.startswith("INFO engine: batch") for x in lines) == 2
    assert any(x.startswith("PASS quickstart:") for x in lines), out
    speed = next(x for x in lines if x.startswith(("PASS speed:", "FAIL speed:")))
    assert speed.startswith("PASS") and "exits equal to the trace 100.00% (floor 100.0%)" in speed, speed
    assert any(x.startswith("PASS syncs: joint:") and "at most 0 host reads" in x for x in lines), out
    assert lines[-1] == "all checks passed"


def test_gpu_epoch_check_with_a_random_model_on_sst2_has_a_tokenizer(tmp_path):
    """--small (a random BERT, no tokenizer of its own) with SST-2 under the data root: it borrows
    MiniLM's tokenizer or falls back to the synthetic task instead of stopping with exit 2."""
    sst2 = tmp_path / "data" / "SST-2"
    sst2.mkdir(parents=True)
    rows = "".join(f"{'a fine film' if i % 2 else 'a dull film'} {i}\t{i % 2}\n" for i in range(80))
    for split in ("train", "dev"):
        (sst2 / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    out = _bench("gpu.py", "--small", "--only", "epoch", "--data-root", tmp_path / "data", "--examples", "64",
                 "--work", tmp_path / "work")
    assert any(x.startswith("INFO epoch:") for x in out.splitlines()), out
    assert out.splitlines()[-1] == "all checks passed", out


def test_gpu_check_runs_from_a_bare_checkout_and_names_missing_packages(tmp_path, capsys):
    """No install needed: a copy of the checkout uses its own eebench; --dry-run walks every check; a
    missing package is one line naming the wheel to carry, and nothing runs."""
    import importlib.util
    import shutil

    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "eebench", copy / "eebench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(BENCH, copy / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    out = _bench("gpu.py", "--dry-run", cwd=tmp_path)  # the repository's script, from another folder
    assert sum(line.startswith("DRY ") for line in out.splitlines()) == 8
    done = subprocess.run([sys.executable, str(copy / "benchmarks" / "gpu.py"), "--dry-run", "--only", "engine"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and f"eebench from {copy / 'eebench'}" in done.stdout, done.stdout + done.stderr
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    gpu.NEEDED["no_such_module_here"] = "no-such-wheel"
    assert gpu.main(["--dry-run"]) == 2
    printed = capsys.readouterr().out
    assert "MISSING packages eebench needs: no-such-wheel" in printed and "DRY" not in printed


def test_train_throughput(tmp_path):
    out = _bench("train_throughput.py", "--model", "random", "--examples", 64, "--rounds", 1, "--batch", 16,
                 "--length", 16, "--device", "cpu", cwd=tmp_path)
    assert "host batch building" in out and "eebench / plain loop =" in out and "on cpu" in out


def test_policy_sweep_speed():
    assert "ms" in _bench("policy_sweep_speed.py", "--examples", 200, "--layers", 4, "--repeat", 1)


def test_strategy_step_time():
    out = _bench("strategy_step_time.py", "--model", "random", "--steps", 1, "--batch", 4, "--length", 8,
                 "--strategies", "romebert,metabert", "--device", "cpu", timeout=600)
    assert "device=cpu" in out and all(f"{name}:" in out for name in ("joint", "romebert", "metabert"))


def test_tokenize_memory():
    assert _bench("tokenize_memory.py", "--n", 300).strip()


@pytest.mark.skipif(not (SHARED_DATA / "glue" / "SST-2" / "dev.tsv").is_file(),
                    reason="needs the GLUE SST-2 dev file under the shared data folder")
def test_trace_overhead():
    out = _bench("trace_overhead.py", "--model", "random", "--data", SHARED_DATA / "glue" / "SST-2" / "dev.tsv",
                 "--limit", 64, "--repeat", 1, "--batch", 32, "--device", "cpu")
    assert "ratio" in out and "device cpu" in out


def test_table_jobs():
    assert "--jobs 1:" in _bench("table_jobs.py", "--jobs", "1", "--tasks", "sst2", "--methods", "two_stage", timeout=600)


def test_gpu_memory_check_measures_metabert_at_its_meta_batch():
    """MetaBERT's meta stage takes meta_batch episodes of support + query rows (64 by default): at the
    recipe batch of 32 it made no episode and the check read "weights only"."""
    import importlib.util

    from eebench.recipe import TrainConfig

    spec = importlib.util.spec_from_file_location("gpu_check_batch", BENCH / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    assert gpu.real_batch(TrainConfig(strategy="metabert"), small=False) == 64
    assert gpu.real_batch(TrainConfig(strategy="metabert", args={"meta_batch": 4, "support_size": 8,
                                                                  "query_size": 8}), small=False) == 64
    assert gpu.real_batch(TrainConfig(strategy="joint"), small=False) == 32


@pytest.mark.multiprocess
def test_grad_overlap():
    out = _bench("grad_overlap.py", "--procs", 2, "--steps", 2, "--rounds", 1, "--batch", 8, "--length", 8,
                 "--layers", 2, "--hidden", 32)
    assert "overlapped / after =" in out and "2 processes on cpu" in out
