"""One explicit training loop over the strategy's stages, on `accelerate`, data-parallel over any
number of processes (eebench.train.parallel), with resumable checkpoints.

Batch size: ``train.batch_size`` is the *global* batch, the examples of one optimizer step, whatever
the number of processes and ``train.grad_accum_steps``: each process takes its contiguous share of
every global batch, cuts it into ``grad_accum_steps`` micro-batches, and the weighted gradients are
summed across processes, so a run with N processes (or with accumulation) computes the gradients of
the single-process run up to float rounding. ``train.per_device_batch_size`` gives the other
convention (examples per process per forward pass; global = that × processes × accumulation)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from transformers import get_linear_schedule_with_warmup

from eebench.console import console, progress
from eebench.errors import UserError
from eebench.recipe import TrainConfig
from eebench.train.parallel import Parallel
from eebench.train.host_reads import DeviceSyncs, HostReads
from eebench.train.preemption import Preempted, Preemption
from eebench.train.strategies import StepContext

from eebench.train.checkpoint import checkpoint_dir, fault_point, save_checkpoint
from eebench.train.state import BatchPlan, TaskJob, TrainState
from eebench.train.step import run_step, step_loader


LOG_EVERY = 50
"""Steps between two train_log.jsonl records: the loop reads the device's loss values only then."""

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


HEAD_PREFIXES = ("heads.", "lte.")


def param_groups(model, params: list[torch.nn.Parameter], weight_decay: float,
                 head_lr: float | None = None) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms; exit heads at ``head_lr`` when given."""
    chosen = {id(p) for p in params}
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if id(p) in chosen:
            head = head_lr is not None and name.removeprefix("module.").startswith(HEAD_PREFIXES)
            groups.setdefault((name.endswith(NO_DECAY), head), []).append(p)
    out = []
    for (no_decay, head), ps in groups.items():
        group = {"params": ps, "weight_decay": 0.0 if no_decay else weight_decay}
        if head:
            group["lr"] = head_lr
        out.append(group)
    return out


def check_lockstep(jobs: list[TaskJob]) -> None:
    """Multitask training runs the tasks' stages side by side: their names and epochs must agree."""
    for job in jobs[1:]:
        if [(s.name, s.epochs) for s in job.stages] != [(s.name, s.epochs) for s in jobs[0].stages]:
            raise UserError(f"multitask training runs the tasks' stages in lockstep: task {job.name} has stages "
                            f"{[s.name for s in job.stages]}, task {jobs[0].name} has "
                            f"{[s.name for s in jobs[0].stages]}; give the tasks compatible strategies")
        for mine, first in zip(job.stages, jobs[0].stages):
            if mine.lr != first.lr:  # one optimizer per stage serves every task: a per-task lr would be ignored
                raise UserError(f"multitask training builds one optimizer per stage for all tasks, so their "
                                f"learning rates must agree: stage {mine.name} of task {job.name} has lr {mine.lr:g}, "
                                f"of task {jobs[0].name} {first.lr:g}; set the same lr for every task (the "
                                f"[[tasks]] args of {job.name}, e.g. stage2_lr, or train.lr)")


def global_batch_size(cfg: TrainConfig, processes: int) -> int:
    """Examples per optimizer step (see the module docstring)."""
    if cfg.per_device_batch_size is not None:
        return cfg.per_device_batch_size * processes * cfg.grad_accum_steps
    return cfg.batch_size


def train(
    model,
    jobs: list[TaskJob],
    cfg: TrainConfig,
    accelerator,
    log_path: Path,
    on_epoch_end: Callable[[str, int], dict] | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
) -> list[dict]:
    """Train stage by stage; within every epoch the tasks take turns, each over all its batches
    (BERTer's sequential multitask loop; one job = ordinary single-task training). Returns one
    summary per (stage, epoch) (also appended to ``log_path`` by the main process).

    ``on_epoch_end(stage, epoch)`` (called on every process) saves the model and may return dev
    metrics to record: for one task {"dev_metric", "dev_layerwise"}, for several {"tasks": {...}}.
    With ``run_dir``, the full training state is checkpointed after every epoch (and every
    ``cfg.checkpoint_every`` steps); ``resume`` continues from the last checkpoint."""
    check_lockstep(jobs)
    model.to(accelerator.device)
    state = TrainState(model, jobs)
    accelerator.register_for_checkpointing(state)
    if resume and run_dir is not None and checkpoint_dir(run_dir) is not None:
        accelerator.load_state(str(checkpoint_dir(run_dir)))  # model, position, histories, every RNG
    overlap = cfg.overlap_grad_reduce if cfg.overlap_grad_reduce is not None else accelerator.device.type == "cuda"
    par = Parallel.from_accelerator(accelerator, overlap)
    if resume and par.is_main:
        _truncate(log_path, state.position.log_bytes)
    with Preemption() as preemption, progress() as bars, \
            open(log_path if par.is_main else os.devnull, "a", encoding="utf-8") as log:
        loop = _Loop(model, jobs, cfg, accelerator, par, state, bars, log, run_dir, on_epoch_end)
        loop.preemption = preemption if run_dir is not None else None  # no checkpoint to stop at: no stop
        for s in range(state.position.stage, len(jobs[0].stages)):
            loop.stage(s)
            state.loaded = None
    return state.history


@dataclass
class _StageRun:
    """One stage's optimizer, schedule and batch plans, and where its losses add up."""

    index: int
    params_of: dict[str, list]
    backbone_grad: bool
    optimizer: torch.optim.Optimizer
    scheduler: object
    plans: dict[str, BatchPlan]
    total: int
    progress_task: object
    running: torch.Tensor  # this process's share of the step losses not yet folded into pos.running


class _Loop:
    """The loop's shared context; each method is one level of stage → epoch → job → step."""

    def __init__(self, model, jobs, cfg, accelerator, par, state, bars, log, run_dir, on_epoch_end):
        self.model, self.jobs, self.cfg, self.accelerator, self.par = model, jobs, cfg, accelerator, par
        self.state, self.pos, self.bars, self.log = state, state.position, bars, log
        self.run_dir, self.on_epoch_end = run_dir, on_epoch_end
        self.global_batch = global_batch_size(cfg, par.world)
        self.preemption: Preemption | None = None
        self.stop_after_epoch = False  # preempted at an epoch's last step: stop once its end is checkpointed

    # ------------------------------------------------------------------ stage
    def stage(self, s: int) -> None:
        pos, stage0 = self.pos, self.jobs[0].stages[s]
        resuming = s == pos.stage and pos.mid_stage
        if not resuming:
            pos.epoch, pos.job, pos.batch, pos.step, pos.running, pos.seen = 1, 0, 0, 0, 0.0, 0
        pos.stage = s
        if stage0.epochs == 0:
            return
        run = self._start_stage(s, resuming)
        for epoch in range(pos.epoch, stage0.epochs + 1):
            self.epoch(run, stage0, epoch)

    def _start_stage(self, s: int, resuming: bool) -> _StageRun:
        model, jobs, cfg, pos, stage0 = self.model, self.jobs, self.cfg, self.pos, self.jobs[0].stages[s]
        for p in model.parameters():
            p.requires_grad_(False)
        params_of = {job.name: job.stages[s].trains(job.model) for job in jobs}
        params = list({id(p): p for ps in params_of.values() for p in ps}.values())
        for p in params:
            p.requires_grad_(True)
        backbone_grad = any(p.requires_grad for p in model.backbone.parameters())
        optimizer = torch.optim.AdamW(param_groups(model, params, cfg.weight_decay, cfg.head_lr if backbone_grad
                                                   else None), lr=stage0.lr)
        plans = {job.name: BatchPlan(len(job.data), job.stages[s].batch_size or self.global_batch, cfg.seed + s)
                 for job in jobs}
        total = stage0.epochs * sum(len(plan.sampler) for plan in plans.values())
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
        self.state.optimizer, self.state.scheduler = optimizer, scheduler
        if resuming and self.state.loaded is not None:
            optimizer.load_state_dict(self.state.loaded["optimizer"])
            scheduler.load_state_dict(self.state.loaded["scheduler"])
            for plan in plans.values():
                for _ in range(pos.epoch - 1):
                    plan.next_epoch()
        task = self.bars.add_task(f"{stage0.name}", total=total, completed=pos.step, info="")
        return _StageRun(s, params_of, backbone_grad, optimizer, scheduler, plans, total, task, self._zero())

    def _zero(self) -> torch.Tensor:
        device = self.accelerator.device
        return torch.zeros((), dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)

    def _fold_running(self, run: _StageRun) -> None:
        """Bring pos.running up to date (summed over processes): the one read of the step losses."""
        self.pos.running, run.running = self.pos.running + self.par.sum_floats({"r": run.running})["r"], self._zero()

    # ------------------------------------------------------------------ epoch
    def epoch(self, run: _StageRun, stage0, epoch: int) -> None:
        pos = self.pos
        pos.epoch = epoch
        self.model.train()
        started = time.perf_counter()
        epoch_plans = {name: plan.next_epoch() for name, plan in run.plans.items()}
        for j in range(pos.job, len(self.jobs)):
            pos.job = j
            self.job_steps(run, self.jobs[j], epoch_plans[self.jobs[j].name], epoch, last_job=j == len(self.jobs) - 1)
            pos.batch = 0
        self._fold_running(run)
        self._end_epoch(run, stage0, epoch, started)
        if self.stop_after_epoch:
            raise self._preempted()

    def job_steps(self, run: _StageRun, job: TaskJob, batches: list[list[int]], epoch: int, last_job: bool) -> None:
        cfg, pos, par = self.cfg, self.pos, self.par
        stage = job.stages[run.index]
        loader = step_loader(job.data, batches, pos.batch, par, cfg.grad_accum_steps, stage, job.smart.enabled,
                             self.accelerator.device, cfg.loader_workers)
        for b, inputs in enumerate(loader, start=pos.batch):
            ctx = StepContext(job.regression, pos.step, epoch, job.history, job.pair_loss, par, cfg.seed, run.index,
                              epoch_step=b)
            parts = run_step(job, stage, inputs, ctx, run.params_of[job.name], run.backbone_grad, self.accelerator)
            done = optimizer_step(run.optimizer, run.params_of[job.name], self.accelerator, cfg.max_grad_norm)
            run.scheduler.step()  # a skipped step still counts in the schedule (its length is fixed)
            run.optimizer.zero_grad(set_to_none=True)
            pos.step, pos.total_steps, pos.batch = pos.step + 1, pos.total_steps + 1, b + 1
            pos.overflow_skips += done == OVERFLOW
            if done == STEPPED:
                pos.seen += 1
                run.running = run.running + parts["loss"]  # on the device: no wait for the GPU here
            last = b == len(batches) - 1
            self._log_step(run, job, epoch, parts, len(batches[b]), last, skipped=None if done == STEPPED else done)
            if cfg.checkpoint_every and self.run_dir is not None and pos.total_steps % cfg.checkpoint_every == 0 \
                    and not (last_job and last):
                self._fold_running(run)
                self._checkpoint()
            fault_point(pos.total_steps, par)
            if self.preemption is not None and self.preemption.due(par, self._regular_log_step(run)):
                if last_job and last:  # the epoch's end checkpoints (after its dev evaluation)
                    self.stop_after_epoch = True
                    continue
                self._fold_running(run)
                self._checkpoint()
                raise self._preempted()

    def _preempted(self) -> Preempted:
        return Preempted(f"preempted ({self.preemption.signal or 'signal on another process'}) after step "
                         f"{self.pos.total_steps}, checkpoint saved")

    def _regular_log_step(self, run: _StageRun) -> bool:
        """A step every process logs (the same steps on all of them: by count alone)."""
        step, total = self.pos.step, run.total
        return step % LOG_EVERY == 0 or step == total or step % max(1, total // 10) == 0

    def _log_step(self, run: _StageRun, job: TaskJob, epoch: int, parts: dict, rows: int, last: bool,
                  skipped: str | None = None) -> None:
        """A train_log.jsonl record every LOG_EVERY steps, at each tenth of the stage, and for a
        skipped step (no gradient, or an fp16 overflow: with the scaler's new scale and the run's count
        of them); the only per-step read of the device."""
        pos, total, stage0 = self.pos, run.total, self.jobs[0].stages[run.index]
        if skipped is None and not (self._regular_log_step(run) or (len(self.jobs) > 1 and last)):
            self.bars.update(run.progress_task, advance=1)
            return
        tag = f"{job.name} " if len(self.jobs) > 1 else ""
        values = self.par.sum_floats(parts) if skipped is None else {"skipped": skipped, "rows": rows}
        if skipped == OVERFLOW:
            values.update(scale=float(self.accelerator.scaler.get_scale()), overflow_skips=pos.overflow_skips)
        info = (f"epoch {epoch}/{stage0.epochs} {tag}loss {values['loss']:.4f}" if skipped is None else
                f"epoch {epoch}/{stage0.epochs} {tag}step skipped ({skipped})")
        self.bars.update(run.progress_task, info=info)
        if not console.is_terminal and pos.step % max(1, total // 10) == 0:
            console.print(f"  {stage0.name} step {pos.step}/{total} {info}")  # logs, not a live bar
        record = {"stage": stage0.name, "epoch": epoch, "step": pos.step,
                  **({"task": job.name} if len(self.jobs) > 1 else {}), "lr": run.scheduler.get_last_lr()[0], **values}
        self._write_log(record)
        self.accelerator.log({f"train/{k}": v for k, v in record.items() if isinstance(v, float)},
                             step=pos.total_steps)
        self.bars.update(run.progress_task, advance=1)

    def _write_log(self, record: dict) -> None:
        if self.par.is_main:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def _checkpoint(self) -> None:
        self.pos.log_bytes = self.log.tell() if self.par.is_main else 0
        save_checkpoint(self.accelerator, self.par, self.state, self.run_dir)

    def _end_epoch(self, run: _StageRun, stage0, epoch: int, started: float) -> None:
        """The epoch's summary (dev metrics from on_epoch_end), the histories, then the checkpoint."""
        pos, jobs = self.pos, self.jobs
        n_examples = sum(len(job.data) for job in jobs)
        summary = {"stage": stage0.name, "epoch": epoch, "train_loss": pos.running / max(1, pos.seen),
                   "seconds": round(time.perf_counter() - started, 2),
                   "examples_per_s": round(n_examples / (time.perf_counter() - started), 1)}
        if self.accelerator.scaler is not None:  # fp16: how many updates the loss scaler skipped so far
            summary["overflow_skips"] = pos.overflow_skips
        if self.on_epoch_end is not None:
            summary.update(self.on_epoch_end(stage0.name, epoch) or {})
        self._write_log({"epoch_summary": summary})
        _track_epoch(self.accelerator, summary, pos.total_steps)
        self.state.history.append(summary)
        for job in jobs:
            per_task = summary.get("tasks", {}).get(job.name, summary if len(jobs) == 1 else {})
            job.history.append({**summary, **per_task})
            if "dev_layerwise" in per_task:
                row = " ".join(f"{v:.1f}" for v in per_task["dev_layerwise"])
                console.print(f"  {stage0.name} epoch {epoch}: {job.name} dev {per_task['dev_metric']} per exit: {row}")
        pos.job, pos.running, pos.seen = 0, 0.0, 0
        if epoch == stage0.epochs:
            pos.stage, pos.epoch, pos.step = run.index + 1, 1, 0
        else:
            pos.epoch = epoch + 1
        if self.run_dir is not None:
            self._checkpoint()


STEPPED, NO_GRADIENT, OVERFLOW = "stepped", "no gradient", "overflow"
"""What optimizer_step did: applied the gradients; skipped a step in which no parameter had one; or
(fp16) the loss scaler found inf / NaN gradients, skipped the update and lowered its scale."""


def optimizer_step(optimizer, params: list[torch.nn.Parameter], accelerator, max_grad_norm: float | None) -> str:
    """Clip and apply the gradients (through the fp16 GradScaler when there is one); returns STEPPED,
    NO_GRADIENT or OVERFLOW. A step in which no parameter has a gradient is skipped: GradScaler.step
    refuses an optimizer with no inf checks recorded, and an AdamW step on no gradients would only decay
    the weights. An overflow is seen through a step hook on the optimizer (the scaler's own inf check
    already waited for the device; no further read). Gradients are already summed over processes, so
    every process takes the same decision."""
    if not any(p.grad is not None for p in params):
        return NO_GRADIENT
    scaler = accelerator.scaler
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is None:
        optimizer.step()
        return STEPPED
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper steps the optimizer inside
    taken: list[bool] = []
    hook = inner.register_step_post_hook(lambda *_: taken.append(True))
    try:
        scaler.step(optimizer)
    finally:
        hook.remove()
    scaler.update()
    return STEPPED if taken else OVERFLOW


def _track_epoch(accelerator, summary: dict, step: int) -> None:
    values = {f"epoch/{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and k != "epoch"}
    for name, row in [("", summary)] + [(f"{t}/", r) for t, r in summary.get("tasks", {}).items()]:
        for i, v in enumerate(row.get("dev_layerwise", []), 1):
            values[f"dev/{name}{row['dev_metric']}_exit{i}"] = v
    accelerator.log(values, step=step)


def _truncate(path: Path, size: int) -> None:
    """Cut the log back to what it held at the checkpoint (a killed run wrote past it)."""
    if path.is_file() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)


@contextmanager
def counted_steps(cuda_syncs: bool = False) -> Iterator[list[Counter]]:
    """Within the block, every training step of this loop (its forward and backward, and the
    optimizer step that ends it) is counted: the list gets one Counter per step, (call, where) → reads.
    ``cuda_syncs``: count CUDA synchronisations (`DeviceSyncs`) instead of host reads (`HostReads`)."""
    loop = sys.modules[__name__]  # the module's own names: what the training loop calls
    real_step, real_optimizer_step = loop.run_step, loop.optimizer_step
    per_step: list[Counter] = []
    pending: Counter = Counter()

    def counter():
        return DeviceSyncs() if cuda_syncs else HostReads(where=True)

    def step(*args, **kwargs):
        with counter() as reads:
            out = real_step(*args, **kwargs)
        pending.update(reads.where)
        return out

    def optimizer_step(*args, **kwargs):
        with counter() as reads:
            out = real_optimizer_step(*args, **kwargs)
        per_step.append(pending + reads.where)
        pending.clear()
        return out

    loop.run_step, loop.optimizer_step = step, optimizer_step
    try:
        yield per_step
    finally:
        loop.run_step, loop.optimizer_step = real_step, real_optimizer_step
