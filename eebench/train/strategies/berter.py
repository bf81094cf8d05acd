"""BERTer's modes: Sequential Layer Focus, Smart Alternating, plain fine-tuning and head-only training."""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from pydantic import Field

from eebench.train.losses import LAYER_WEIGHTS, exit_losses
from eebench.train.strategies.base import (LossFn, NoArgs, Stage, Strategy, StrategyArgs, all_params,
                                           final_exit_and_backbone, final_exit_loss, weighted_exits_loss)


class SlfArgs(StrategyArgs):
    """BERTer's Sequential Layer Focus: stage 1 trains, for i = 1..L in turn, exit i with layer i's
    parameters (and the embeddings for i = 1); stage 2 trains everything jointly (train.epochs)."""

    focus_epochs: int = Field(1, ge=0)
    """Epochs of each layer's focus stage."""
    focus_lr: float | None = Field(None, gt=0)
    """Learning rate of the focus stages (default: train.lr)."""
    refine: Literal["joint", "smart_alternating"] = "joint"
    """Stage 2 (global refinement): the joint sum of all exits' losses, or Smart Alternating
    (BERTer's "SLF + Smart Alt" rows)."""


class SmartAlternatingArgs(StrategyArgs):
    """BERTer's Smart Alternating: per epoch, train (a) the final exit + backbone on L_final, or
    (b) all exits jointly on Σ_i L_i. Rule: epoch 1 is (a); after it, (b) when the final exit's dev
    metric of the last epoch is the best seen so far (ties count), else (a)."""


def smart_alternating_phase(history: list) -> str:
    """'final' (train the final exit + backbone) or 'all' (all exits jointly) for the next epoch."""
    if not history:
        return "final"
    finals = [h["dev_layerwise"][-1] for h in history]
    return "all" if finals[-1] >= max(finals) else "final"


def smart_alternating_loss(out, labels, ctx):
    if ctx.history and "dev_layerwise" not in ctx.history[-1]:
        raise RuntimeError("smart_alternating needs per-epoch dev metrics")
    phase = smart_alternating_phase(ctx.history)
    if phase == "final":
        loss, parts = final_exit_loss(out, labels, ctx)
    else:
        loss, parts = weighted_exits_loss(LAYER_WEIGHTS["uniform"])(out, labels, ctx)
    return loss, {**parts, "phase_all": float(phase == "all")}


def _layer_params(i: int) -> Callable[[Any], list[torch.nn.Parameter]]:
    """Layer i's parameters (1-based) and exit i's head; the embeddings too for i = 1."""
    import re

    pattern = re.compile(rf"\.layers?\.{i - 1}\.")

    def select(model) -> list[torch.nn.Parameter]:
        chosen = [p for n, p in model.backbone.named_parameters()
                  if pattern.search("." + n) or (i == 1 and "embeddings" in n)]
        return chosen + list(model.heads[i - 1].parameters())

    return select


def _exit_loss(i: int) -> LossFn:
    def loss(out, labels, ctx):
        value = exit_losses(out.logits[:, i - 1: i], labels, ctx.regression, ctx.pair_loss).sum()
        return value, {f"loss_exit{i}": value.detach()}

    return loss


def slf(train, args: SlfArgs, n_layers: int | None = None) -> list[Stage]:
    if n_layers is None:
        raise ValueError("slf needs the number of layers")
    lr = args.focus_lr or train.lr
    focus = [Stage(f"focus{i}", args.focus_epochs, lr, _layer_params(i), _exit_loss(i))
             for i in range(1, n_layers + 1)]
    refine = (smart_alternating_loss if args.refine == "smart_alternating"
              else weighted_exits_loss(LAYER_WEIGHTS["uniform"]))
    return focus + [Stage("refine", train.epochs, train.lr, all_params, refine)]


def finetune(train, args: NoArgs, n_layers: int | None = None) -> list[Stage]:
    """Plain fine-tuning of the backbone and the final exit (the BERT baseline; BERTer's "fine-tune"
    mode). The early exits stay untrained: read such a run at its last exit."""
    return [Stage("finetune", train.epochs, train.lr, final_exit_and_backbone, final_exit_loss)]


def head_only(train, args: NoArgs, n_layers: int | None = None) -> list[Stage]:
    """The backbone frozen, only the final exit's head trained (BERTer's "pretrain" mode,
    last-linear-layer)."""
    return [Stage("head_only", train.epochs, train.lr, lambda m: list(m.heads[-1].parameters()), final_exit_loss)]


def smart_alternating(train, args: SmartAlternatingArgs, n_layers: int | None = None) -> list[Stage]:
    return [Stage("smart_alternating", train.epochs, train.lr, all_params, smart_alternating_loss)]


REGISTRY = {
    "slf": Strategy(SlfArgs, slf, dev_metrics=lambda args: args.refine == "smart_alternating"),
    "smart_alternating": Strategy(SmartAlternatingArgs, smart_alternating, dev_metrics=lambda args: True),
    "finetune": Strategy(NoArgs, finetune),
    "head_only": Strategy(NoArgs, head_only),
}
"""The strategies this module defines (eebench.train.strategies collects every module's)."""
