"""Resumable training state: where the loop is (stage, epoch, batch, step), the full state saved with
accelerate's ``save_state`` plus that position, the batch order reproducible from any epoch, and the
fault hook the resume tests use."""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import BatchSampler, RandomSampler

from eebench.train.parallel import Parallel

if TYPE_CHECKING:
    from eebench.train.loop import TaskJob


CHECKPOINT = "checkpoint"


FAULT_ENV = "EEBENCH_FAULT_AFTER_STEP"
"""Testing hook: the main process kills itself (SIGKILL) after this many optimizer steps of the run,
as a preempted machine would; the tests use it to check that a killed run resumes exactly."""


@dataclass
class Position:
    """Where training stands: the next thing to do is batch ``batch`` of job ``job`` in epoch
    ``epoch`` of stage ``stage``. Saved with every checkpoint."""

    stage: int = 0
    epoch: int = 1
    job: int = 0
    batch: int = 0
    step: int = 0  # optimizer steps done in this stage
    total_steps: int = 0  # optimizer steps done in the run
    running: float = 0.0  # this epoch's summed step losses so far
    seen: int = 0  # this epoch's steps so far
    log_bytes: int = 0  # size of train_log.jsonl at this point

    @property
    def mid_stage(self) -> bool:
        return (self.epoch, self.job, self.batch) != (1, 0, 0)


class TrainState:
    """Everything a resumed run needs beyond the RNG states accelerate keeps: the model, the current
    stage's optimizer and scheduler, the position and the per-epoch histories (Smart Alternating
    chooses each epoch's objective from them). Registered with ``accelerator.save_state``."""

    def __init__(self, model: torch.nn.Module, jobs: list[TaskJob]):
        self.model, self.jobs = model, jobs
        self.optimizer = self.scheduler = None
        self.position = Position()
        self.history: list[dict] = []
        self.loaded: dict | None = None

    def state_dict(self) -> dict:
        return {"version": 1, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "position": asdict(self.position), "history": self.history,
                "job_histories": {job.name: job.history for job in self.jobs}}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.position = Position(**state["position"])
        self.history = list(state["history"])
        for job in self.jobs:
            job.history[:] = state["job_histories"].get(job.name, [])
        self.loaded = state


class BatchPlan:
    """The global batches of one job in one stage, epoch after epoch: the same order a shuffling
    ``DataLoader(generator=Generator().manual_seed(seed))`` gives, reproducible from any epoch."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.sampler = BatchSampler(RandomSampler(range(n), generator=self.generator), batch_size, drop_last=False)

    def next_epoch(self) -> list[list[int]]:
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # a DataLoader's base seed
        return [list(b) for b in self.sampler]


def checkpoint_dir(run_dir: Path) -> Path | None:
    """The run's last complete checkpoint, if any (a swap cut short leaves ``checkpoint.old``)."""
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        folder = Path(run_dir) / name
        if (folder / "custom_checkpoint_0.pkl").is_file():
            return folder
    return None


def checkpoint_position(run_dir: Path) -> Position | None:
    folder = checkpoint_dir(run_dir)
    if folder is None or not (folder / "position.json").is_file():
        return None
    return Position(**json.loads((folder / "position.json").read_text()))


def _save_checkpoint(accelerator, par: Parallel, state: TrainState, run_dir: Path) -> None:
    """accelerate's save_state into ``checkpoint.new``, then swapped in: a kill at any moment leaves
    the previous complete checkpoint."""
    folder = run_dir / CHECKPOINT
    new, old = folder.with_name(CHECKPOINT + ".new"), folder.with_name(CHECKPOINT + ".old")
    if par.is_main:
        shutil.rmtree(new, ignore_errors=True)
    par.barrier()
    accelerator.save_state(str(new))
    par.barrier()
    if par.is_main:
        (new / "position.json").write_text(json.dumps(asdict(state.position)))
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        new.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    par.barrier()


def remove_checkpoint(run_dir: Path) -> None:
    for name in (CHECKPOINT, CHECKPOINT + ".new", CHECKPOINT + ".old"):
        shutil.rmtree(Path(run_dir) / name, ignore_errors=True)


def _fault(total_steps: int, par: Parallel) -> None:
    at = os.environ.get(FAULT_ENV)
    if at and par.is_main and total_steps == int(at):
        os.kill(os.getpid(), signal.SIGKILL)
