"""One optimisation step of one task: this process's share of the global batch in micro-batches,
the stage's loss (or its own gradient rule), SMART's term, and the outputs gathered across
processes for losses that couple a batch's examples."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import torch

from eebench.train.parallel import Parallel
from eebench.train.smart import smart_regularizer
from eebench.train.strategies import Stage, StepContext

if TYPE_CHECKING:
    from eebench.train.loop import TaskJob


def _step(job: TaskJob, stage: Stage, rows: list[int], ctx: StepContext, params: list, backbone_grad: bool,
          accelerator, accum: int) -> dict[str, float]:
    """One optimisation step's forward and backward passes over the global batch ``rows``: this
    process's share, in micro-batches, gradients summed over processes. Returns the global batch's
    logged values (the same on every process)."""
    par = ctx.parallel
    n_global = len(rows)
    model, data = job.model, job.data
    device = accelerator.device
    scale = accelerator.scaler.scale if accelerator.scaler is not None else (lambda x: x)
    logs: dict[str, float] = defaultdict(float)

    def batch_of(index) -> tuple[dict, torch.Tensor, torch.Tensor]:
        batch = {k: v.to(device) for k, v in data.collate([data[int(i)] for i in index]).items()}
        return batch, batch.pop("labels"), batch.pop("index")

    if stage.gradient is not None:  # the strategy runs its own passes over the global batch (MAML)
        batch, labels, _ = batch_of(rows)
        ctx.backward = lambda loss: scale(loss).backward()
        with accelerator.autocast():
            for k, v in stage.gradient(model, batch, labels, ctx, params).items():
                logs[k] += v
        if job.smart.enabled:
            _smart_only(job, batch_of, par.share(rows), n_global, ctx, accelerator, scale, logs)
        par.sum_grads(params)
        return par.sum_floats(dict(logs))

    parts_grads: dict[str, list[torch.Tensor | None]] = {}
    for mb in np.array_split(np.asarray(par.share(rows), dtype=np.int64), accum):
        if len(mb) == 0 and not stage.coupled:
            continue
        w_local = len(mb) / n_global
        with accelerator.autocast():
            if len(mb):
                batch, labels, index = batch_of(mb)
                out = model(**batch, backbone_grad=backbone_grad)
            else:
                labels = torch.zeros(0, dtype=torch.float32 if job.regression else torch.long, device=device)
                batch, index, out = None, None, None
            clean = out.logits if out is not None else None
            w = w_local
            if stage.coupled:  # the loss sees the whole global micro-batch (every process's rows)
                out, labels = _gather_outputs(model, out, labels, par)
                w = labels.shape[0] / n_global / par.world
            if stage.parts is not None:
                losses = stage.parts(out, labels, ctx)
                loss = sum(losses.values())
                parts = {f"loss_{k}": v.item() for k, v in losses.items()}
            else:
                loss, parts = stage.loss(out, labels, ctx)
            contribution = loss * (w * par.world if stage.coupled else w)
            for k, v in {"loss": loss.item(), **parts}.items():
                logs[k] += v * w
            if job.smart.enabled and batch is not None:
                reg = smart_regularizer(model, batch, clean, job.regression, job.smart, index, n_global,
                                        ctx.noise_key)
                logs["loss"] += job.smart.lambda_s * reg.item() * w_local
                logs["loss_smart"] += reg.item() * w_local
                contribution_smart = job.smart.lambda_s * reg * w_local
            else:
                contribution_smart = None
        if stage.parts is not None:
            last = list(losses)[-1]
            for name, part in losses.items():
                keep = name != last or contribution_smart is not None
                grads = torch.autograd.grad(scale(part * w), params, retain_graph=keep, allow_unused=True)
                acc = parts_grads.setdefault(name, [None] * len(params))
                for i, g in enumerate(grads):
                    if g is not None:
                        acc[i] = g if acc[i] is None else acc[i] + g
            if contribution_smart is not None:
                scale(contribution_smart).backward()
        else:
            total = contribution if contribution_smart is None else contribution + contribution_smart
            if total.requires_grad:
                scale(total).backward()
    par.sum_grads(params)
    logs = par.sum_floats(dict(logs))
    if stage.parts is not None:
        parts_grads = {name: par.sum_optional(parts_grads.get(name, [None] * len(params)), params)
                       for name in par.union(parts_grads)}
        grads, extra = stage.combine(model, params, parts_grads)
        for p, g in zip(params, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        logs.update(extra)
    return logs


def _smart_only(job, batch_of, share, n_global, ctx, accelerator, scale, logs) -> None:
    """SMART's term for strategies that set their own gradients: on this process's share."""
    if not len(share):
        return
    batch, _, index = batch_of(share)
    w = len(share) / n_global
    with accelerator.autocast():
        clean = job.model(**batch).logits
        reg = smart_regularizer(job.model, batch, clean, job.regression, job.smart, index, n_global, ctx.noise_key)
    scale(job.smart.lambda_s * reg * w).backward()
    logs["loss_smart"] += reg.item() * w


def _gather_outputs(model, out, labels: torch.Tensor, par: Parallel):
    """Every process's rows of the exit outputs and labels (own rows differentiable)."""
    from eebench.model.multiexit import ExitOutputs

    if out is None:  # this process has no rows in this micro-batch
        hidden = model.heads[0].dense.in_features
        n_layers, n_labels = model.num_layers, model.num_labels
        zeros = lambda *shape: torch.zeros(0, *shape, device=labels.device)  # noqa: E731
        out = ExitOutputs(logits=zeros(n_layers, n_labels), pooled=zeros(n_layers, hidden),
                          first_token=zeros(n_layers, hidden),
                          lte=zeros(n_layers) if model.lte is not None else None)
    # fp32 on every process: under autocast a process with rows holds bf16/fp16 outputs while one
    # without rows holds fp32 placeholders, and a collective needs one dtype (the loss is fp32 anyway)
    fields = {name: par.gather_rows(getattr(out, name).float()) for name in ("logits", "pooled", "first_token", "lte")
              if getattr(out, name) is not None}
    return ExitOutputs(**fields), par.gather_rows(labels)
