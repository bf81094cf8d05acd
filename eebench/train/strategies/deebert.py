"""DeeBERT's two stages, joint training (PABEE's weights as a setting), BERxiT's alternating and
DeeBERT+SD / FastBERT's self-distillation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eebench.train.losses import LAYER_WEIGHTS, distill_losses, exit_losses
from eebench.train.strategies.base import (Strategy, LossFn, Stage, StrategyArgs, all_params, early_exit_params,
                                           final_exit_and_backbone, early_exits_loss, final_exit_loss,
                                           weighted_exits_loss)


class TwoStageArgs(StrategyArgs):
    """DeeBERT. Stage 1: backbone + final exit on the final exit's loss. Stage 2: backbone and final
    exit frozen; exits 1..L-1 trained on the sum of their losses."""

    stage2_lr: float | None = Field(None, gt=0)
    """Learning rate of stage 2 (default: train.lr)."""
    stage2_epochs: int | None = Field(None, ge=0)
    """Epochs of stage 2 (default: train.epochs)."""


class JointArgs(StrategyArgs):
    """All parameters, one stage, Σ_i w_i · L_i over all exits."""

    layer_weights: Literal["uniform", "pabee", "sqrt", "inverse"] = "uniform"


class AlternatingArgs(StrategyArgs):
    """BERxiT: alternate the final exit's loss and the sum of all exits' losses."""

    every: Literal["step", "epoch"] = "step"
    """Alternate per optimisation step (BERxiT) or per epoch (as MetaBERT describes it). Per step, the
    parity is the step's within its epoch, as castorini/berxit counts it (restarting every epoch)."""


class SelfDistillArgs(TwoStageArgs):
    """DeeBERT+SD / FastBERT: two-stage; stage 2 distils the (frozen) final exit into exits 1..L-1."""

    gamma: float = Field(0.9, ge=0, le=1)
    temperature: float = Field(3.0, gt=0)
    kd_reduction: Literal["class_mean", "batchmean"] = "class_mean"
    """class_mean: the KL term averaged over batch and classes, as romebert/DeeBERT-SD's
    ``nn.KLDivLoss()`` (default 'mean' reduction) computes it — the code the DeeBERT+SD rows of
    RomeBERT's tables come from; batchmean: summed over classes, averaged over the batch (C× larger)."""


def self_distill_loss(gamma: float, temperature: float, class_mean: bool = False) -> LossFn:
    """Σ_{i<L} [(1−γ)·L_i + γ·T²·KL(p_L(T) ‖ p_i(T))], teacher = final exit, detached."""

    def loss(out, labels, ctx):
        ce = exit_losses(out.logits[:, :-1], labels, ctx.regression, ctx.pair_loss)  # Shape: [L-1]
        kd = distill_losses(out.logits[:, :-1], out.logits[:, -1].detach(), temperature, ctx.regression,
                            class_mean)
        total = ((1 - gamma) * ce + gamma * kd).sum()
        return total, {"loss_sd": total.detach(), "loss_kd": kd.sum().detach()}

    return loss


def alternating_loss(every: str, odd_final: bool = True) -> LossFn:
    """Even steps (or epochs): the final exit's loss; odd: the sum of all exits' losses (without the
    final exit's when ``odd_final`` is False, as BERxiT's alternate-lte). Step parity counts within
    the epoch (castorini/berxit's ``step_num`` is the batch index of its epoch)."""
    odd = weighted_exits_loss(LAYER_WEIGHTS["uniform"]) if odd_final else early_exits_loss

    def loss(out, labels, ctx):
        phase = ctx.epoch_step if every == "step" else ctx.epoch - 1
        return final_exit_loss(out, labels, ctx) if phase % 2 == 0 else odd(out, labels, ctx)

    return loss


# ------------------------------------------------------------------------ strategies
def two_stage(train, args: TwoStageArgs, n_layers: int | None = None,
              stage2_loss: LossFn = early_exits_loss) -> list[Stage]:
    return [
        Stage("stage1", train.epochs, train.lr, final_exit_and_backbone, final_exit_loss),
        Stage("stage2", args.stage2_epochs if args.stage2_epochs is not None else train.epochs,
              args.stage2_lr or train.lr, early_exit_params, stage2_loss),
    ]


def joint(train, args: JointArgs, n_layers: int | None = None) -> list[Stage]:
    return [Stage("joint", train.epochs, train.lr, all_params, weighted_exits_loss(LAYER_WEIGHTS[args.layer_weights]))]


def alternating(train, args: AlternatingArgs, n_layers: int | None = None) -> list[Stage]:
    return [Stage("alternating", train.epochs, train.lr, all_params, alternating_loss(args.every))]


def self_distill(train, args: SelfDistillArgs, n_layers: int | None = None) -> list[Stage]:
    return two_stage(train, args, n_layers, self_distill_loss(args.gamma, args.temperature,
                                                              args.kd_reduction == "class_mean"))


REGISTRY = {
    "two_stage": Strategy(TwoStageArgs, two_stage),
    "joint": Strategy(JointArgs, joint),
    "alternating": Strategy(AlternatingArgs, alternating),
    "self_distill": Strategy(SelfDistillArgs, self_distill),
}
"""The strategies this module defines (eebench.train.strategies collects every module's)."""
