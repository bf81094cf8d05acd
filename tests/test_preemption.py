"""Preemption (a cluster taking the GPUs back): processes agree on the step to stop at, a Slurm cell's
job forwards the signal to its trainer and waits for it, and a job asks for CPUs and memory for every
GPU's rank. The run itself (signalled mid-epoch, resumed bitwise) is tested in test_distributed.py beside
the killed runs, against the same uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest


class _Par:
    active = True

    def __init__(self, others: float):
        self.others, self.calls = others, 0

    def sum_floats(self, values):
        self.calls += 1
        return {k: v + self.others for k, v in values.items()}


def test_several_processes_agree_to_stop_at_a_logging_step_only():
    from eebench.train.preemption import Preemption

    before = signal.getsignal(signal.SIGTERM)
    with Preemption() as preemption:
        os.kill(os.getpid(), signal.SIGTERM)  # noted, not fatal, while training
        assert preemption.signal == "SIGTERM"
        par = _Par(others=0.0)
        assert not preemption.due(par, log_step=False) and par.calls == 0  # no collective between logging steps
        assert preemption.due(par, log_step=True) and par.calls == 1
    quiet = Preemption()
    assert quiet.due(_Par(others=1.0), log_step=True)  # another process was signalled: this one stops too
    assert not quiet.due(_Par(others=0.0), log_step=True)
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are restored


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
