"""Learned-to-exit (BERxiT, BERTer): the LTE head's targets and loss, the lte strategy and train.lte
(the LTE term joined to another strategy's stages)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from pydantic import Field

from eebench.train.losses import LAYER_WEIGHTS
from eebench.train.strategies.base import Strategy, LossFn, Stage, StrategyArgs, all_params, weighted_exits_loss
from eebench.train.strategies.deebert import alternating_loss


class LteArgs(StrategyArgs):
    """Learned-to-exit (BERxiT, BERTer): a shared linear + sigmoid on every exit's pooled output
    predicts the exit's certainty, trained with MSE to the ground-truth certainty."""

    schedule: Literal["alternating", "joint"] = "alternating"
    """The exits' training: BERxiT's alternating, or joint (BERTer)."""
    lte_phase: Literal["joint", "after"] = "joint"
    """joint: the LTE loss is added at every step (BERTer: L_i + J_i); after: the schedule first,
    then a stage training only the LTE head (the public BERxiT code's `-lte` phase)."""
    lte_epochs: int = Field(1, ge=1)
    """Epochs of the LTE-only stage (lte_phase = "after")."""
    every: Literal["step", "epoch"] = "step"
    layer_weights: Literal["uniform", "pabee", "sqrt", "inverse"] = "uniform"
    lte_reduction: Literal["mean", "sum"] = "mean"
    """mean: the LTE loss is the MSE averaged over layers × batch, as castorini/berxit's
    ``MSELoss()(exit_pred, exit_label)`` on the stacked [L, B] tensors; sum: summed over layers (L× larger;
    BERTer's Σ_i (L_i + J_i), what train.lte uses)."""
    odd_step_final: bool = False
    """schedule = "alternating", lte_phase = "joint" (BERxiT's alternate-lte): whether odd steps also
    train the final exit. The reference leaves it out (odd steps: exits 1..L-1 + LTE); True keeps it,
    as plain ``alternating`` does."""


def lte_targets(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """Ground-truth certainty per exit, Shape: [B, L]: 1[exit i is correct] (classification) or
    1 − tanh|ŷ_i − y| (regression)."""
    if regression:
        return 1.0 - torch.tanh((logits[..., 0] - labels[:, None].to(logits.dtype)).abs())
    return (logits.argmax(-1) == labels[:, None]).to(logits.dtype)


def lte_loss_fn(reduction: str = "sum") -> LossFn:
    """sum: Σ_i mean_b (u_i − ũ_i)²; mean: mean_{i,b} (u_i − ũ_i)² (castorini/berxit). Targets detached."""
    def loss(out, labels, ctx):
        target = lte_targets(out.logits.detach(), labels, ctx.regression)
        per_layer = ((out.lte - target) ** 2).mean(0)  # Shape: [L]
        value = per_layer.mean() if reduction == "mean" else per_layer.sum()
        return value, {"loss_lte": value.detach()}

    return loss


lte_loss = lte_loss_fn("sum")


def plus_lte(base: LossFn, lte: LossFn = lte_loss) -> LossFn:
    def loss(out, labels, ctx):
        total, parts = base(out, labels, ctx)
        extra, lte_parts = lte(out, labels, ctx)
        return total + extra, {**parts, **lte_parts}

    return loss


def lte(train, args: LteArgs, n_layers: int | None = None) -> list[Stage]:
    lte = lte_loss_fn(args.lte_reduction)
    if args.schedule == "alternating":
        base = alternating_loss(args.every, odd_final=args.odd_step_final or args.lte_phase == "after")
    else:
        base = weighted_exits_loss(LAYER_WEIGHTS[args.layer_weights])
    if args.lte_phase == "joint":
        return [Stage(f"{args.schedule}+lte", train.epochs, train.lr, all_params, plus_lte(base, lte))]
    return [Stage(args.schedule, train.epochs, train.lr, all_params, base),
            Stage("lte", args.lte_epochs, train.lr, lambda m: list(m.lte.parameters()), lte)]


def with_lte(stages: list[Stage]) -> list[Stage]:
    """train.lte: the LTE loss J_i joins every stage that trains all exit heads or the early ones
    (L_i + J_i, BERTer), and that stage trains the LTE head too; stages with their own gradient rule
    (RomeBERT's GR, MAML's meta phase) and final-exit-only stages are left as they are."""
    out, joined = [], 0
    for stage in stages:
        heads = getattr(stage.trains, "exit_heads", "")  # what the parameter selection declares it trains
        if stage.gradient is None and stage.parts is None and heads in ("all", "early"):
            def trains(model, select=stage.trains):
                return select(model) + list(model.lte.parameters())

            stage = replace(stage, name=f"{stage.name}+lte", trains=trains, loss=plus_lte(stage.loss))
            joined += 1
        out.append(stage)
    if not joined:
        raise ValueError("train.lte: no stage of this strategy trains the exit heads with a loss the "
                         "LTE term can join; use strategy \"lte\" or another strategy")
    return out


REGISTRY = {"lte": Strategy(LteArgs, lte, lte_head=True)}
"""The strategies this module defines (eebench.train.strategies collects every module's)."""
