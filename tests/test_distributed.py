"""Data-parallel training on CPU (gloo, 2 processes launched with torchrun) against one process, and
runs killed with SIGKILL then resumed. Marked `multiprocess` (about a minute together): deselect
with `-m "not multiprocess"` for a quick run; `.ci/run` runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, quickstart_overrides

sys.path.insert(0, str(Path(__file__).parent))
from dist_worker import CASES  # noqa: E402

pytestmark = pytest.mark.multiprocess
QUICKSTART = str(ROOT / "recipes" / "quickstart.toml")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}


def _run(cmd: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=timeout,
                          cwd=ROOT)


def _eebench(*args, procs: int = 1, env: dict | None = None) -> subprocess.CompletedProcess:
    launcher = TORCHRUN if procs == 2 else [sys.executable]
    return _run([*launcher, "-m", "eebench.cli", *map(str, args)], env)


def _sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


# ------------------------------------------------------------------------------ equivalence
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence")
    worker = str(Path(__file__).parent / "dist_worker.py")
    for cmd in ([sys.executable, worker, str(out)], [*TORCHRUN, worker, str(out)]):
        result = _run(cmd)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("case", [c for c in CASES if not CASES[c].get("single_only")])
def test_two_processes_reach_the_single_process_weights(weights, case):
    one, two = torch.load(weights / f"{case}_w1.pt"), torch.load(weights / f"{case}_w2.pt")
    assert _max_diff(one["state"], one["init"]) > 1e-3  # training moved the weights
    diff = _max_diff(one["state"], two["state"])
    print(f"{case}: max |w(1 process, batch 8) - w(2 processes x 4)| = {diff:.2e}")
    assert diff < 2e-5, f"{case}: 2 processes differ from 1 process by {diff:.2e}"
    losses = [(a["train_loss"], b["train_loss"]) for a, b in zip(one["history"], two["history"])]
    assert len(one["history"]) == len(two["history"]) and all(abs(a - b) < 1e-5 for a, b in losses)


def test_the_overlapped_all_reduce_sums_what_the_one_after_the_backward_sums(weights):
    """Two processes: buckets all-reduced while the backward runs give the weights that one all-reduce
    after it gives, bit for bit (a sum of two numbers is the same in any bucketing)."""
    overlapped, after = torch.load(weights / "joint_w2.pt"), torch.load(weights / "joint+no_overlap_w2.pt")
    assert _max_diff(overlapped["state"], overlapped["init"]) > 1e-3
    assert overlapped["overlapped"] == ["joint"] and after["overlapped"] == []  # the overlap really ran
    assert _max_diff(overlapped["state"], after["state"]) == 0.0


def test_the_overlap_starts_buckets_in_order_and_only_when_their_gradients_are_in(monkeypatch):
    """One process standing in for many (the all-reduce recorded, not run): buckets start during the
    backward, last layers first, each once its gradients have all arrived; the rest at finish()."""
    import eebench.train.overlap as overlap

    started = []

    class Done:
        def wait(self):
            pass

    monkeypatch.setattr(overlap.dist, "all_reduce", lambda flat, async_op: started.append(flat.numel()) or Done())
    layers = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    unused = torch.nn.Parameter(torch.ones(3))
    params = [unused, *layers.parameters()]
    reducer = overlap.OverlappedSum(params, bucket=20)  # reversed, <= 20 each: [b2 w2 b1] [w1 b0] [w0 unused]
    assert [sum(p.numel() for p in b) for b in reducer.buckets] == [9, 20, 19]
    reducer.arm()
    seen_during = []
    layers[0].weight.register_post_accumulate_grad_hook(lambda p: seen_during.append(len(started)))
    layers(torch.ones(2, 4)).sum().backward()
    assert seen_during == [2]  # two buckets started during the backward; the last waits for `unused`
    reducer.finish()
    assert started == [9, 20, 19] and torch.equal(unused.grad, torch.zeros(3))
    grads = [p.grad.clone() for p in layers.parameters()]
    for p in layers.parameters():
        p.grad = None
    layers(torch.ones(2, 4)).sum().backward()
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, layers.parameters()))  # sums written back in place


def test_the_equivalence_check_can_fail(weights):
    """Negative control: one process on half the global batch is a different run."""
    half, two = torch.load(weights / "joint-half-batch_w1.pt"), torch.load(weights / "joint_w2.pt")
    assert _max_diff(half["state"], two["state"]) > 1e-3


# ------------------------------------------------------------------------------ one writer
@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """The shrunk quickstart (DeeBERT two-stage: stage 2 freezes the backbone) with 1 and 2 processes."""
    tmp = tmp_path_factory.mktemp("quick")
    outputs = {}
    for procs in (1, 2):
        result = _eebench("finetune", QUICKSTART, *_sets(quickstart_overrides(tmp, f"p{procs}")),
                          "--set", "train.eval_each_epoch=true", procs=procs)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        outputs[procs] = result.stdout + result.stderr
    return tmp, outputs


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_two_process_run_folder_equals_the_single_process_one(quick_runs):
    tmp, outputs = quick_runs
    one, two = tmp / "p1", tmp / "p2"
    assert _files(one) == _files(two)
    log1 = [json.loads(line) for line in (one / "train_log.jsonl").read_text().splitlines()]
    log2 = [json.loads(line) for line in (two / "train_log.jsonl").read_text().splitlines()]
    assert len(log1) == len(log2)  # every line once
    for a, b in zip(log1, log2):
        a, b = a.get("epoch_summary", a), b.get("epoch_summary", b)
        assert a.get("loss", a.get("train_loss")) == pytest.approx(b.get("loss", b.get("train_loss")), abs=1e-5)
        assert a.get("dev_layerwise") == pytest.approx(b.get("dev_layerwise"), abs=1e-6)
    for split in ("dev", "test"):
        l1 = json.loads((one / f"eval/{split}/layerwise.json").read_text())
        l2 = json.loads((two / f"eval/{split}/layerwise.json").read_text())
        assert [r["acc"] for r in l1] == pytest.approx([r["acc"] for r in l2])
    assert json.loads((two / "status.json").read_text())["processes"] == 2
    assert outputs[2].count("done:") == 1 and outputs[2].count("trained in") == 1
    assert outputs[2].count("eebench finetune") == 1


# ------------------------------------------------------------------------------ resume
def _resume_case(tmp: Path, procs: int, name: str, quick_runs) -> tuple[Path, Path]:
    """A run killed mid-stage 2, and the uninterrupted run it must end equal to: the quick run of as many
    processes (the same recipe; periodic checkpoints change nothing in the training)."""
    killed = _eebench("finetune", QUICKSTART, *_resume_sets(tmp, name), procs=procs,
                      env={"EEBENCH_FAULT_AFTER_STEP": "17"})
    assert killed.returncode != 0  # SIGKILL mid-stage 2 (13 steps per stage), after the step-15 checkpoint
    run = tmp / name
    assert json.loads((run / "status.json").read_text())["state"] == "training"
    return run, quick_runs[0] / f"p{procs}"


def _resume_sets(tmp: Path, name: str) -> list[str]:
    return _sets(quickstart_overrides(tmp, name) + ["train.eval_each_epoch=true", "train.checkpoint_every=5"])


def _same_log(a: Path, b: Path) -> None:
    drop = ("seconds", "examples_per_s")
    rows = [[{k: v for k, v in json.loads(line).get("epoch_summary", json.loads(line)).items() if k not in drop}
             for line in (f / "train_log.jsonl").read_text().splitlines()] for f in (a, b)]
    assert rows[0] == rows[1]


def test_a_killed_run_says_so_and_resumes_bitwise(tmp_path, quick_runs):
    run, whole = _resume_case(tmp_path, 1, "killed", quick_runs)
    evaluated = _eebench("evaluate", run)
    assert evaluated.returncode == 2 and "unfinished" in evaluated.stderr
    assert f"eebench resume {run}" in evaluated.stderr.replace("\n", "")
    again = _eebench("finetune", QUICKSTART, *_resume_sets(tmp_path, "killed"))
    assert again.returncode == 2 and f"eebench resume {run}" in again.stderr.replace("\n", "")
    assert "Traceback" not in again.stderr
    resumed = _eebench("resume", run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    sha = [json.loads((f / "model/exits.json").read_text())["weights_sha256"] for f in (run, whole)]
    assert sha[0] == sha[1]  # bitwise: same weights as the uninterrupted run
    _same_log(run, whole)
    assert json.loads((run / "eval/dev/layerwise.json").read_text()) == \
        json.loads((whole / "eval/dev/layerwise.json").read_text())
    assert not (run / "checkpoint").exists() and json.loads((run / "status.json").read_text())["state"] == "finished"


def test_a_killed_two_process_run_resumes(tmp_path, quick_runs):
    run, whole = _resume_case(tmp_path, 2, "killed2", quick_runs)
    resumed = _eebench("finetune", QUICKSTART, *_resume_sets(tmp_path, "killed2"), "--resume", procs=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    from safetensors.torch import load_file

    a, b = load_file(str(run / "model/model.safetensors")), load_file(str(whole / "model/model.safetensors"))
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"2 processes, killed and resumed vs uninterrupted: max |dw| = {diff:.2e}")
    assert diff == 0.0
    _same_log(run, whole)


def test_a_preempted_run_checkpoints_at_the_signal_and_resumes_bitwise(tmp_path, quick_runs):
    """SIGUSR2 (Slurm's notice through submitit) mid-epoch, with no periodic checkpoints: the run
    checkpoints after the step in progress, stops as interrupted, and resumes to the uninterrupted
    run's weights (eebench.train.preemption)."""
    sets = _sets(quickstart_overrides(tmp_path, "pre") + ["train.eval_each_epoch=true"])
    stopped = _eebench("finetune", QUICKSTART, *sets, env={"EEBENCH_FAULT_AFTER_STEP": "7",
                                                           "EEBENCH_FAULT_SIGNAL": "SIGUSR2"})
    run, whole = tmp_path / "pre", quick_runs[0] / "p1"
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and status["error"].startswith("preempted (SIGUSR2) after step 7")
    position = json.loads((run / "checkpoint" / "position.json").read_text())
    assert (position["total_steps"], position["epoch"], position["batch"]) == (7, 1, 7)
    assert f"eebench resume {run}" in stopped.stderr.replace("\n", "")
    resumed = _eebench("resume", run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    sha = [json.loads((f / "model/exits.json").read_text())["weights_sha256"] for f in (run, whole)]
    assert sha[0] == sha[1]  # bitwise: the uninterrupted run's weights
    _same_log(run, whole)


def test_a_preempted_two_process_run_stops_on_both_at_one_step_and_resumes(tmp_path, quick_runs):
    """Only the main process is signalled: both agree at the next logging step (every step logs in this
    13-step stage), save one checkpoint, stop, and the resumed pair ends at the uninterrupted weights."""
    sets = _sets(quickstart_overrides(tmp_path, "pre2") + ["train.eval_each_epoch=true"])
    stopped = _eebench("finetune", QUICKSTART, *sets, procs=2,
                       env={"EEBENCH_FAULT_AFTER_STEP": "7", "EEBENCH_FAULT_SIGNAL": "SIGUSR2"})
    run, whole = tmp_path / "pre2", quick_runs[0] / "p2"
    # every rank exits 130 (torch's launcher then reports its failed children in its own words)
    assert stopped.returncode != 0 and "preempted (SIGUSR2) after step 7" in stopped.stdout + stopped.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and status["error"].startswith("preempted (SIGUSR2) after step 7")
    assert json.loads((run / "checkpoint" / "position.json").read_text())["total_steps"] == 7
    resumed = _eebench("finetune", QUICKSTART, *sets, "--resume", procs=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    sha = [json.loads((f / "model/exits.json").read_text())["weights_sha256"] for f in (run, whole)]
    assert sha[0] == sha[1]
    _same_log(run, whole)
