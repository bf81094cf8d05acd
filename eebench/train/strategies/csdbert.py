"""CsdBERT: CE over all exits + α·L_SCL + β·L_KD with the lowest-loss exits as teachers."""

from __future__ import annotations

from pydantic import Field

from eebench.train.csd import csdbert_terms
from eebench.train.losses import exit_losses
from eebench.train.strategies.base import Strategy, LossFn, Stage, StrategyArgs, all_params


class CsdBertArgs(StrategyArgs):
    """CsdBERT: L_CE (sum over exits) + α·L_SCL + β·L_KD, teachers = the lowest-loss exits per batch."""

    n_teachers: int | None = Field(None, ge=1)
    """Teachers per batch; default: half the exits (6 of 12 in the paper)."""
    tau: float = Field(0.5, gt=0)
    kd_temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.01, ge=0)
    beta: float = Field(1.0, ge=0)
    contrastive: bool = True
    """False: drop L_SCL (Table 5 ablation)."""
    distillation: bool = True
    """False: drop L_KD (Table 5 ablation)."""


def csdbert_loss(args: CsdBertArgs, n_layers: int | None) -> LossFn:
    def loss(out, labels, ctx):
        ce = exit_losses(out.logits, labels, ctx.regression, ctx.pair_loss)  # Shape: [L]
        n_teachers = args.n_teachers or max(1, ce.numel() // 2)
        terms = csdbert_terms(out.logits, out.first_token, ce, min(n_teachers, ce.numel()), args.tau,
                              args.kd_temperature, ctx.regression, args.contrastive, args.distillation)
        total = ce.sum() + args.alpha * terms.get("scl", 0.0) + args.beta * terms.get("kd", 0.0)
        return total, {"loss_ce": ce.sum().detach(), **{f"loss_{k}": v.detach() for k, v in terms.items()}}

    return loss


def csdbert(train, args: CsdBertArgs, n_layers: int | None = None) -> list[Stage]:
    return [Stage("csdbert", train.epochs, train.lr, all_params, csdbert_loss(args, n_layers), coupled=True)]


REGISTRY = {"csdbert": Strategy(CsdBertArgs, csdbert)}
"""The strategies this module defines (eebench.train.strategies collects every module's)."""
