"""One optimisation step of one task: this process's share of the global batch in micro-batches,
the stage's loss (or its own gradient rule), SMART's term, and the outputs gathered across
processes for losses that couple a batch's examples."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from eebench.train.parallel import Parallel
from eebench.train.smart import ExampleRows, smart_regularizer
from eebench.train.strategies import Stage, StepContext

if TYPE_CHECKING:
    from eebench.train.state import TaskJob


class StepInputs(torch.utils.data.Dataset):
    """The tensors of every optimisation step of one job's epoch, for a DataLoader: item ``b`` is this
    process's micro-batches of global batch ``b`` (``None`` for an empty one) and, for a stage with its
    own gradient rule, the whole global batch. Built with one Arrow read per batch (``__getitems__``),
    so a DataLoader with workers, pinned memory and prefetch builds the next steps while this one runs."""

    def __init__(self, data, batches: list[list[int]], par: Parallel, accum: int, whole: bool, smart: bool):
        self.data, self.batches, self.par = data, batches, par
        self.accum, self.whole, self.smart = accum, whole, smart

    def __len__(self) -> int:
        return len(self.batches)

    def _collate(self, index) -> dict | None:
        """A micro-batch's tensors, and with SMART (its per-example noise) the dataset indices and real
        lengths as host numbers, read here in the loader so the step never waits for the device."""
        index = [int(i) for i in index]
        if not index:
            return None
        batch = self.data.collate(self.data.__getitems__(index))
        if self.smart:
            mask = batch.get("attention_mask")
            lengths = mask.sum(1).tolist() if mask is not None else [batch["input_ids"].shape[-1]] * len(index)
            batch["index"] = ExampleRows(index, lengths)
        return batch

    def __getitem__(self, b: int) -> dict:
        rows = self.batches[b]
        share = self.par.share(rows)
        if self.whole:  # MAML: the global batch; SMART's term on this process's share
            return {"rows": len(rows), "whole": self._collate(rows),
                    "micro": [self._collate(share)] if self.smart else []}
        return {"rows": len(rows),
                "micro": [self._collate(mb) for mb in np.array_split(np.asarray(share, dtype=np.int64), self.accum)]}


def passthrough(item):
    """The DataLoader's collate_fn: items are already batches."""
    return item


def step_loader(data, batches: list[list[int]], start: int, par: Parallel, accum: int, stage: Stage,
                smart: bool, device: torch.device, workers: int | None) -> torch.utils.data.DataLoader:
    """Steps ``start``.. of an epoch as a DataLoader: ``workers`` processes (None: 2 on a GPU, 0 on the
    CPU) build them ahead, pinned for an asynchronous copy to a GPU."""
    gpu = torch.device(device).type == "cuda"
    workers = (2 if gpu else 0) if workers is None else workers
    inputs = StepInputs(data, batches, par, accum, stage.gradient is not None, smart)
    # a generator of its own: a DataLoader draws its workers' base seed when iterated, and drawing it
    # from torch's global generator would shift every dropout mask after it (the run would change)
    generator = torch.Generator().manual_seed(start)
    return torch.utils.data.DataLoader(inputs, batch_size=None, sampler=range(start, len(batches)),
                                       collate_fn=passthrough, num_workers=workers, pin_memory=gpu,
                                       prefetch_factor=4 if workers else None, generator=generator)


def _on(batch: dict | None, device) -> tuple[dict, torch.Tensor, ExampleRows] | None:
    if batch is None:
        return None
    rows = batch.get("index")  # stays on the host: SMART seeds its noise from it
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "index"}
    return batch, batch.pop("labels"), rows


def run_step(job: TaskJob, stage: Stage, inputs: dict, ctx: StepContext, params: list, backbone_grad: bool,
             accelerator) -> dict:
    """One optimisation step's forward and backward passes over a global batch (``inputs`` from
    StepInputs: this process's share, in micro-batches), gradients summed over processes. Returns
    this process's weighted share of the logged values as 0-dim tensors, not yet summed over processes
    (reading them waits for the device: the loop does it only when it logs)."""
    scale = accelerator.scaler.scale if accelerator.scaler is not None else (lambda x: x)
    if stage.gradient is not None:  # the strategy runs its own passes over the global batch (MAML)
        return _own_gradient_step(job, stage, inputs, ctx, params, accelerator, scale)
    logs: dict = defaultdict(float)
    parts_grads: dict[str, list[torch.Tensor | None]] = {}
    overlap = job.overlaps.get(stage.name) if stage.parts is None else None
    last = len(inputs["micro"]) - 1
    for i, micro in enumerate(inputs["micro"]):
        if micro is None and not stage.coupled:
            continue
        with accelerator.autocast():
            terms = _micro_loss(job, stage, micro, inputs["rows"], ctx, backbone_grad, accelerator.device, logs)
        if stage.parts is not None:
            _backward_parts(terms, params, scale, parts_grads)
        else:
            total = terms.contribution if terms.smart is None else terms.contribution + terms.smart
            if total.requires_grad:
                if overlap and i == last:
                    overlap.arm()
                scale(total).backward()
    if overlap:
        overlap.finish()
    elif stage.parts is None:
        ctx.parallel.sum_grads(params)
        _decide_overlap(job, stage, params, ctx.parallel)
    else:
        logs.update(_combine_parts(job.model, stage, params, parts_grads, ctx.parallel))
    return dict(logs)


def _decide_overlap(job: TaskJob, stage: Stage, params: list, par: Parallel) -> None:
    """After a stage's first (synchronous) step: overlap its later all-reduces with the backward when
    every trained parameter got a gradient on some process (the same answer on every process: the
    gradients were just summed). eebench.train.overlap says why."""
    if stage.name in job.overlaps or not par.active:
        return
    from eebench.train.overlap import OverlappedSum

    every = all(p.grad is not None for p in params)
    job.overlaps[stage.name] = OverlappedSum(params) if par.overlap and every else False


def _own_gradient_step(job: TaskJob, stage: Stage, inputs: dict, ctx: StepContext, params: list, accelerator,
                       scale) -> dict:
    """A stage that sets the gradients itself (MAML) over the global batch, plus SMART's term."""
    logs: dict = defaultdict(float)
    batch, labels, _ = _on(inputs["whole"], accelerator.device)
    ctx.backward = lambda loss: scale(loss).backward()
    with accelerator.autocast():
        for k, v in stage.gradient(job.model, batch, labels, ctx, params).items():
            logs[k] += v
    if job.smart.enabled:
        _smart_only(job, _on(inputs["micro"][0], accelerator.device), inputs["rows"], ctx, accelerator, scale, logs)
    ctx.parallel.sum_grads(params)
    return dict(logs)


@dataclass
class _MicroLoss:
    losses: dict | None  # the named parts (stages with parts + combine)
    w: float  # this micro-batch's weight in the global batch
    contribution: torch.Tensor  # its weighted loss, for backward
    smart: torch.Tensor | None  # SMART's weighted term


def _micro_loss(job: TaskJob, stage: Stage, micro: dict | None, n_global: int, ctx: StepContext,
                backbone_grad: bool, device, logs: dict) -> _MicroLoss:
    """One micro-batch's forward and loss (gathered over processes for a coupled loss); adds its
    weighted logged values to ``logs``."""
    par, model = ctx.parallel, job.model
    if micro is not None:
        batch, labels, index = _on(micro, device)
        out = model(**batch, backbone_grad=backbone_grad)
    else:  # a coupled loss with no rows here still joins the other processes' gather
        labels = torch.zeros(0, dtype=torch.float32 if job.regression else torch.long, device=device)
        batch, index, out = None, None, None
    w_local = labels.shape[0] / n_global
    clean = out.logits if out is not None else None
    w = w_local
    if stage.coupled:  # the loss sees the whole global micro-batch (every process's rows)
        out, labels = _gather_outputs(model, out, labels, par)
        w = labels.shape[0] / n_global / par.world
    losses = None
    if stage.parts is not None:
        losses = stage.parts(out, labels, ctx)
        loss = sum(losses.values())
        parts = {f"loss_{k}": v.detach() for k, v in losses.items()}
    else:
        loss, parts = stage.loss(out, labels, ctx)
    for k, v in {"loss": loss.detach(), **parts}.items():
        logs[k] += v * w
    smart = None
    if job.smart.enabled and batch is not None:
        reg = smart_regularizer(model, batch, clean, job.regression, job.smart, index, n_global, ctx.noise_key)
        logs["loss"] += job.smart.lambda_s * reg.detach() * w_local
        logs["loss_smart"] += reg.detach() * w_local
        smart = job.smart.lambda_s * reg * w_local
    return _MicroLoss(losses, w, loss * (w * par.world if stage.coupled else w), smart)


def _backward_parts(terms: _MicroLoss, params: list, scale, parts_grads: dict) -> None:
    """Each part's gradient taken on its own (accumulated over micro-batches), then SMART's."""
    last = list(terms.losses)[-1]
    for name, part in terms.losses.items():
        keep = name != last or terms.smart is not None
        grads = torch.autograd.grad(scale(part * terms.w), params, retain_graph=keep, allow_unused=True)
        acc = parts_grads.setdefault(name, [None] * len(params))
        for i, g in enumerate(grads):
            if g is not None:
                acc[i] = g if acc[i] is None else acc[i] + g
    if terms.smart is not None:
        scale(terms.smart).backward()


def _combine_parts(model, stage: Stage, params: list, parts_grads: dict, par: Parallel) -> dict:
    """The plain gradients (SMART's) and every part's, summed over processes in one collective,
    then joined by the stage's rule (RomeBERT's projection). Returns its logged values."""
    names = par.union(parts_grads)
    k = len(params)
    flat = par.sum_optional([p.grad for p in params]
                            + [g for name in names for g in parts_grads.get(name, [None] * k)],
                            params * (1 + len(names)))
    for p, g in zip(params, flat[:k]):
        p.grad = g
    parts_grads = {name: flat[(j + 1) * k:(j + 2) * k] for j, name in enumerate(names)}
    grads, extra = stage.combine(model, params, parts_grads)
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g
    return extra


def _smart_only(job, share, n_global, ctx, accelerator, scale, logs) -> None:
    """SMART's term for strategies that set their own gradients: on this process's share."""
    if share is None:
        return
    batch, labels, index = share
    w = labels.shape[0] / n_global
    with accelerator.autocast():
        clean = job.model(**batch).logits
        reg = smart_regularizer(job.model, batch, clean, job.regression, job.smart, index, n_global, ctx.noise_key)
    scale(job.smart.lambda_s * reg * w).backward()
    logs["loss_smart"] += reg.detach() * w


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
    names = [name for name in ("logits", "pooled", "first_token", "lte") if getattr(out, name) is not None]
    *gathered, labels = par.gather_many([getattr(out, name).float() for name in names] + [labels])
    return ExitOutputs(**dict(zip(names, gathered))), labels
