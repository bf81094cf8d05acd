"""One explicit training loop over the strategy's stages, on `accelerate`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from transformers import get_linear_schedule_with_warmup

from eebench.console import console, progress
from eebench.data.encode import Encoded, train_loader
from eebench.errors import UserError
from eebench.recipe import SmartConfig, TrainConfig
from eebench.train.smart import smart_regularizer
from eebench.train.strategies import Stage, StepContext

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


def check_lockstep(jobs: list[TaskJob]) -> None:
    """Multitask training runs the tasks' stages side by side: their names and epochs must agree."""
    for job in jobs[1:]:
        if [(s.name, s.epochs) for s in job.stages] != [(s.name, s.epochs) for s in jobs[0].stages]:
            raise UserError(f"multitask training runs the tasks' stages in lockstep: task {job.name} has stages "
                            f"{[s.name for s in job.stages]}, task {jobs[0].name} has "
                            f"{[s.name for s in jobs[0].stages]}; give the tasks compatible strategies")


def train(
    model,
    jobs: list[TaskJob],
    cfg: TrainConfig,
    accelerator: Accelerator,
    log_path: Path,
    on_epoch_end: Callable[[str, int], dict] | None = None,
) -> list[dict]:
    """Train stage by stage; within every epoch the tasks take turns, each over all its batches
    (BERTer's sequential multitask loop; one job = ordinary single-task training). Returns one
    summary per (stage, epoch) (also appended to ``log_path``).

    ``on_epoch_end(stage, epoch)`` checkpoints and may return dev metrics to record: for one task
    {"dev_metric", "dev_layerwise"}, for several {"tasks": {name: {...}}}."""
    check_lockstep(jobs)
    n_stages = len(jobs[0].stages)
    model = accelerator.prepare(model)
    inner = accelerator.unwrap_model(model)
    history = []
    with progress() as bars, open(log_path, "a", encoding="utf-8") as log:
        for s in range(n_stages):
            stage0 = jobs[0].stages[s]
            if stage0.epochs == 0:
                continue
            for p in inner.parameters():
                p.requires_grad_(False)
            params_of = {job.name: job.stages[s].trains(job.model) for job in jobs}
            params = list({id(p): p for ps in params_of.values() for p in ps}.values())
            for p in params:
                p.requires_grad_(True)
            backbone_grad = any(p.requires_grad for p in inner.backbone.parameters())
            head_lr = cfg.head_lr if backbone_grad else None
            optimizer = torch.optim.AdamW(param_groups(inner, params, cfg.weight_decay, head_lr), lr=stage0.lr)
            loaders = {job.name: accelerator.prepare(train_loader(job.data, job.stages[s].batch_size or cfg.batch_size,
                                                                  cfg.seed + s)) for job in jobs}
            total = stage0.epochs * sum(len(loader) for loader in loaders.values())
            scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
            optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
            task = bars.add_task(f"{stage0.name}", total=total, info="")
            step = 0
            for epoch in range(1, stage0.epochs + 1):
                model.train()
                started, running, seen = time.perf_counter(), 0.0, 0
                for job in jobs:
                    stage, tag = job.stages[s], f"{job.name} " if len(jobs) > 1 else ""
                    job_params = params_of[job.name]
                    loader = loaders[job.name]
                    for b, batch in enumerate(loader):
                        labels = batch.pop("labels")
                        batch.pop("index")
                        ctx = StepContext(job.regression, step, epoch, job.history, job.pair_loss)
                        loss, parts = _step(model if len(jobs) == 1 else job.model, job, stage, batch, labels,
                                            ctx, job_params, backbone_grad, accelerator)
                        if cfg.max_grad_norm:
                            accelerator.clip_grad_norm_(job_params, cfg.max_grad_norm)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                        step += 1
                        seen += 1
                        running += loss
                        info = f"epoch {epoch}/{stage0.epochs} {tag}loss {loss:.4f}"
                        bars.update(task, advance=1, info=info)
                        if not console.is_terminal and step % max(1, total // 10) == 0:
                            console.print(f"  {stage0.name} step {step}/{total} {info}")  # logs, not a live bar
                        if step % 50 == 0 or step == total or (len(jobs) > 1 and b == len(loader) - 1):
                            log.write(json.dumps({"stage": stage0.name, "epoch": epoch, "step": step,
                                                  **({"task": job.name} if len(jobs) > 1 else {}),
                                                  "lr": scheduler.get_last_lr()[0], "loss": loss, **parts}) + "\n")
                            log.flush()
                n_examples = sum(len(job.data) for job in jobs)
                summary = {"stage": stage0.name, "epoch": epoch, "train_loss": running / max(1, seen),
                           "seconds": round(time.perf_counter() - started, 2),
                           "examples_per_s": round(n_examples / (time.perf_counter() - started), 1)}
                if on_epoch_end is not None:
                    summary.update(on_epoch_end(stage0.name, epoch) or {})
                log.write(json.dumps({"epoch_summary": summary}) + "\n")
                log.flush()
                history.append(summary)
                for job in jobs:
                    per_task = summary.get("tasks", {}).get(job.name, summary if len(jobs) == 1 else {})
                    job.history.append({**summary, **per_task})
                    if "dev_layerwise" in per_task:
                        row = " ".join(f"{v:.1f}" for v in per_task["dev_layerwise"])
                        console.print(f"  {stage0.name} epoch {epoch}: {job.name} dev {per_task['dev_metric']} "
                                      f"per exit: {row}")
    return history


def _step(model, job: TaskJob, stage: Stage, batch: dict, labels: torch.Tensor, ctx: StepContext,
          params: list, backbone_grad: bool, accelerator: Accelerator) -> tuple[float, dict]:
    """One optimisation step's forward and backward (gradients set, not yet applied)."""
    inner = accelerator.unwrap_model(model)
    smart = job.smart
    if stage.gradient is None:
        with accelerator.autocast():
            out = model(**batch, backbone_grad=backbone_grad)
            loss, parts = stage.loss(out, labels, ctx)
            if smart.enabled:
                reg = smart_regularizer(inner, batch, out.logits, job.regression, smart)
                loss = loss + smart.lambda_s * reg
                parts["loss_smart"] = reg.item()
        accelerator.backward(loss)
        return loss.item(), parts
    # the strategy runs the forward and sets the gradients (RomeBERT's GR, MAML)
    parts = stage.gradient(inner, batch, labels, ctx, params)
    if smart.enabled:
        reg = smart_regularizer(inner, batch, inner(**batch).logits, job.regression, smart)
        accelerator.backward(smart.lambda_s * reg)
        parts["loss_smart"] = reg.item()
    return float(parts["loss"]), parts
