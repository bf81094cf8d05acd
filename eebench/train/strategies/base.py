"""What every strategy is built of: the step context, a stage (a loss over all exits' outputs and the
parameters it trains), the parameter selections, the plain exit losses and the Strategy record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict

from eebench.train.losses import exit_losses
from eebench.train.parallel import Parallel


@dataclass
class StepContext:
    regression: bool
    step: int  # optimisation step within the stage, from 0
    epoch: int  # from 1
    history: list = field(default_factory=list)  # per-epoch summaries so far (dev metrics included)
    pair_loss: str = "cross_entropy"  # or "cosine" (task.pair_loss)
    parallel: Parallel = field(default_factory=Parallel)  # this process among the data-parallel ones
    seed: int = 0  # train.seed
    stage: int = 0  # the stage's index
    backward: Callable[[torch.Tensor], None] = lambda loss: loss.backward()
    """How a GradFn back-propagates a loss (scaled under fp16)."""
    epoch_step: int = 0
    """Optimisation step within the epoch, from 0 (BERxiT's alternation parity restarts every epoch)."""

    @property
    def noise_key(self) -> tuple[int, int, int]:
        """Seeds SMART's per-example noise: the same for an example whichever process holds it."""
        return (self.seed, self.stage, self.step)


# (outputs, labels, ctx) → (loss, parts to log)
LossFn = Callable[[Any, torch.Tensor, StepContext], tuple[torch.Tensor, dict[str, float]]]


# (model, global batch, labels, ctx, params) → parts to log (with "loss"), this process's share of
# the global values; runs its own passes over its share of the batch (``ctx.parallel``) and
# back-propagates with ``ctx.backward`` (MAML's episodes); the loop sums gradients over processes
GradFn = Callable[[Any, dict, torch.Tensor, StepContext, list], dict[str, float]]


# (outputs, labels, ctx) → named losses whose gradients a CombineFn joins (RomeBERT's GR)
PartsFn = Callable[[Any, torch.Tensor, StepContext], dict[str, torch.Tensor]]


# (model, params, {part name: gradients summed over the global batch}) → (gradients, parts to log)
CombineFn = Callable[[Any, list, dict[str, list]], tuple[list, dict[str, float]]]


@dataclass
class Stage:
    name: str
    epochs: int
    lr: float
    trains: Callable[[Any], list[torch.nn.Parameter]]  # model → the parameters this stage updates
    loss: LossFn
    gradient: GradFn | None = None  # None: backward of ``loss``
    batch_size: int | None = None  # None: train.batch_size
    parts: PartsFn | None = None
    """Set with ``combine``: the gradient of each named loss is taken separately over the whole
    global batch (every process's share summed), then ``combine`` joins them (RomeBERT's projection
    acts on the averaged g_f and g_s, as a single process would compute them)."""
    combine: CombineFn | None = None
    coupled: bool = False
    """The loss couples a batch's examples (CsdBERT's teacher ranking and contrastive negatives): it
    is computed over the rows of every process (eebench.train.parallel.Parallel.gather_rows)."""


class StrategyArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(StrategyArgs):
    """No arguments."""


# ------------------------------------------------------------------------ parameter selections
def all_params(model) -> list[torch.nn.Parameter]:
    return list(model.parameters())


def final_exit_and_backbone(model) -> list[torch.nn.Parameter]:
    return list(model.backbone.parameters()) + list(model.heads[-1].parameters())


def early_exit_params(model) -> list[torch.nn.Parameter]:
    return [p for head in model.heads[:-1] for p in head.parameters()]


# What each selection trains of the exit heads: train.lte's term joins stages training all of them
# or the early ones (eebench.train.strategies.with_lte).
all_params.exit_heads = "all"


early_exit_params.exit_heads = "early"


final_exit_and_backbone.exit_heads = "final"


# ------------------------------------------------------------------------ losses
def final_exit_loss(out, labels, ctx):
    loss = exit_losses(out.logits[:, -1:], labels, ctx.regression, ctx.pair_loss).sum()
    return loss, {"loss_final": loss.detach()}


def early_exits_loss(out, labels, ctx):
    loss = exit_losses(out.logits[:, :-1], labels, ctx.regression, ctx.pair_loss).sum()
    return loss, {"loss_exits": loss.detach()}


def weighted_exits_loss(weight_fn: Callable[[int], torch.Tensor]) -> LossFn:
    on_device: dict[tuple, torch.Tensor] = {}  # the weights copied to the loss's device and dtype once

    def loss(out, labels, ctx):
        losses = exit_losses(out.logits, labels, ctx.regression, ctx.pair_loss)  # Shape: [L]
        key = (losses.numel(), losses.device, losses.dtype)
        if key not in on_device:
            on_device[key] = weight_fn(losses.numel()).to(losses)
        total = (on_device[key] * losses).sum()
        return total, {"loss_final": losses[-1].detach(), "loss_mean": losses.mean().detach()}

    return loss


@dataclass(frozen=True)
class Strategy:
    """A training strategy as a record: its arguments, its stages and the traits the pipeline asks
    about (nothing checks a strategy by name)."""

    args: type[StrategyArgs]
    build: Callable[..., list[Stage]]
    lte_head: bool = False
    """The model needs a learned-to-exit head (besides any strategy with train.lte)."""
    dev_metrics: Callable[[Any], bool] = lambda args: False
    """(validated args) → whether it chooses each epoch's objective from dev metrics."""
