"""The state of a training run, apart from the loop that advances it: one task's job (TaskJob), where
training stands (Position), what a checkpoint holds (TrainState) and each epoch's batches (BatchPlan)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch.utils.data import BatchSampler, RandomSampler

from eebench.data.encode import Encoded
from eebench.recipe import SmartConfig
from eebench.train.strategies import Stage


@dataclass
class TaskJob:
    """One task's share of training: its model (a view of the shared backbone when multitask), its
    stages, data and settings. Single-task training is one job."""

    name: str
    model: torch.nn.Module
    stages: list[Stage]
    data: Encoded
    regression: bool
    smart: SmartConfig
    pair_loss: str = "cross_entropy"
    history: list = field(default_factory=list)  # this task's per-epoch summaries (dev metrics)
    overlaps: dict = field(default_factory=dict)  # stage name → OverlappedSum, or False (eebench.train.overlap)


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
    overflow_skips: int = 0  # fp16 steps the loss scaler skipped (inf / NaN gradients) in the run

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
