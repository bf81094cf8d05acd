"""Preemption (a cluster taking the GPUs back): on SIGUSR2 / SIGTERM a training run checkpoints at the
next step and stops as an interrupted run; resumed, it ends bitwise equal to a run never stopped. A
Slurm cell's job forwards the signal to its trainer and waits for it; a job asks for CPUs and memory
for every GPU's rank."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, quickstart_overrides

QUICKSTART = str(ROOT / "recipes" / "quickstart.toml")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}


def _eebench(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eebench.cli", *map(str, args)], capture_output=True, text=True,
                          env={**ENV, **(env or {})}, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("signal_name", ["SIGUSR2"])
def test_a_preempted_run_checkpoints_at_the_signal_and_resumes_bitwise(tmp_path, signal_name):
    sets = [x for o in quickstart_overrides(tmp_path, "pre") + ["output.report=false"] for x in ("--set", o)]
    whole = _eebench("finetune", QUICKSTART, *sets, "--set", 'output.run_name="whole"')
    assert whole.returncode == 0, whole.stderr[-2000:]
    # the signal arrives mid-epoch (step 7 of 13 in the first stage); no periodic checkpoints
    stopped = _eebench("finetune", QUICKSTART, *sets,
                       env={"EEBENCH_FAULT_AFTER_STEP": "7", "EEBENCH_FAULT_SIGNAL": signal_name})
    run = tmp_path / "pre"
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and status["error"].startswith(f"preempted ({signal_name}) after step 7")
    position = json.loads((run / "checkpoint" / "position.json").read_text())
    assert (position["total_steps"], position["epoch"], position["batch"]) == (7, 1, 7)
    assert f"eebench resume {run}" in stopped.stderr.replace("\n", "")
    resumed = _eebench("resume", run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    sha = [json.loads((f / "model/exits.json").read_text())["weights_sha256"] for f in (run, tmp_path / "whole")]
    assert sha[0] == sha[1]  # bitwise: the uninterrupted run's weights
    drop = ("seconds", "examples_per_s")
    logs = [[{k: v for k, v in json.loads(x).get("epoch_summary", json.loads(x)).items() if k not in drop}
             for x in (f / "train_log.jsonl").read_text().splitlines()] for f in (run, tmp_path / "whole")]
    assert logs[0] == logs[1]


class _Par:
    active = True

    def __init__(self, others: float):
        self.others, self.calls = others, 0

    def sum_floats(self, values):
        self.calls += 1
        return {k: v + self.others for k, v in values.items()}


def test_several_processes_agree_to_stop_at_a_logging_step_only():
    from eebench.train.preemption import Preemption

    with Preemption() as preemption:
        os.kill(os.getpid(), signal.SIGTERM)  # noted, not fatal, while training
        assert preemption.signal == "SIGTERM"
        par = _Par(others=0.0)
        assert not preemption.due(par, log_step=False) and par.calls == 0  # no collective between logging steps
        assert preemption.due(par, log_step=True) and par.calls == 1
    quiet = Preemption()
    assert quiet.due(_Par(others=1.0), log_step=True)  # another process was signalled: this one stops too
    assert not quiet.due(_Par(others=0.0), log_step=True)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are restored


def test_a_slurm_job_forwards_the_preemption_to_its_trainer_and_waits():
    pytest.importorskip("submitit")
    from eebench.jobs import CellJob

    job = CellJob("/r/a.toml", None)
    assert job.command().startswith("exec ")  # the script's process is the trainer (or torch's launcher)
    trainer = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                                "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
                                "print('ready', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert trainer.stdout.readline().strip() == "ready"
    job._proc = trainer
    again = job.checkpoint()
    assert trainer.returncode == 7  # told to stop, and waited for
    assert type(again.function).__name__ == "CellJob" and not hasattr(again.function, "_proc")


def test_a_slurm_job_asks_for_cpus_and_memory_for_every_gpu():
    from eebench.jobs import LauncherConfig, slurm_parameters

    eight = slurm_parameters(LauncherConfig(gpus=8, partition="gpu"))
    assert (eight["gpus_per_node"], eight["cpus_per_task"], eight["mem_gb"]) == (8, 64, 256)
    cpu_only = slurm_parameters(LauncherConfig(gpus=0, cpus=4, mem_gb=16))
    assert (cpu_only["cpus_per_task"], cpu_only["mem_gb"]) == (4, 16)
