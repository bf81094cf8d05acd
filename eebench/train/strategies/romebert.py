"""RomeBERT: one stage, L_final + L_sd, with gradient regularization (the projection of conflicting
gradients, eebench.train.gradients)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eebench.train.gradients import projection_params, regularized_gradients
from eebench.train.strategies.base import Strategy, CombineFn, Stage, StrategyArgs, all_params, final_exit_loss
from eebench.train.strategies.deebert import self_distill_loss


class RomeBertArgs(StrategyArgs):
    """RomeBERT: one stage, all parameters, L_final + L_sd, with gradient regularization."""

    gamma: float = Field(0.9, ge=0, le=1)
    temperature: float = Field(3.0, gt=0)
    gradient_regularization: bool = True
    """False: self-distillation only (the paper's SD ablation): one backward of L_final + L_sd."""
    role_swap: bool = False
    """Public code: on tasks other than MNLI/QQP the roles are as in the paper (g_f is projected);
    on MNLI/QQP it projects g_s off g_f instead. True applies that per-task swap."""
    task: str = ""
    """Filled in from task.name; decides the role swap."""
    kd_reduction: Literal["class_mean", "batchmean"] = "class_mean"
    """class_mean: the KL term averaged over batch and classes, as the public code's nn.KLDivLoss()
    (default 'mean' reduction) computes it — the numbers RomeBERT's tables come from; batchmean: the
    KL summed over classes and averaged over the batch, as the paper's formula reads (C times larger)."""


def romebert_parts(out, labels, ctx, gamma, temperature, kd_reduction="class_mean"):
    l_final, _ = final_exit_loss(out, labels, ctx)
    l_sd, _ = self_distill_loss(gamma, temperature, kd_reduction == "class_mean")(out, labels, ctx)
    return l_final, l_sd


def romebert_combine(args: RomeBertArgs) -> CombineFn:
    """g* = Proj(g_f) + g_s (g_f of L_final, g_s of L_sd, each over the global batch)."""
    project_final = not (args.role_swap and args.task in ("mnli", "qqp"))
    cache: dict[int, set[str]] = {}

    def combine(model, params, grads):
        names = _param_names(model, params)
        project = cache.setdefault(id(model), set(projection_params(model)))
        return regularized_gradients(grads["final"], grads["sd"], names, project, project_final)

    return combine


def _param_names(model, params) -> list[str]:
    lookup = {id(p): n for n, p in model.named_parameters()}
    return [lookup[id(p)] for p in params]


def romebert(train, args: RomeBertArgs, n_layers: int | None = None) -> list[Stage]:
    def loss(out, labels, ctx):
        l_final, l_sd = romebert_parts(out, labels, ctx, args.gamma, args.temperature, args.kd_reduction)
        return l_final + l_sd, {"loss_final": l_final.detach(), "loss_sd": l_sd.detach()}

    if not args.gradient_regularization:
        return [Stage("romebert", train.epochs, train.lr, all_params, loss)]

    def parts(out, labels, ctx):
        l_final, l_sd = romebert_parts(out, labels, ctx, args.gamma, args.temperature, args.kd_reduction)
        return {"final": l_final, "sd": l_sd}

    return [Stage("romebert", train.epochs, train.lr, all_params, loss, parts=parts, combine=romebert_combine(args))]


REGISTRY = {"romebert": Strategy(RomeBertArgs, romebert)}
"""The strategies this module defines (eebench.train.strategies collects every module's)."""
