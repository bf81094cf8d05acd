"""Training strategies as named units: a list of stages, each a loss over all exits' outputs plus
which parameters it trains. Recipes select one with ``train.strategy`` and give its ``train.args``.
docs/methods.md gives each strategy's formula and the choices made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eebench.train.gradients import projection_params, regularized_gradients
from eebench.train.losses import LAYER_WEIGHTS, distill_losses, exit_losses


@dataclass
class StepContext:
    regression: bool
    step: int  # optimisation step within the stage, from 0
    epoch: int  # from 1


# (outputs, labels, ctx) → (loss, parts to log)
LossFn = Callable[[Any, torch.Tensor, StepContext], tuple[torch.Tensor, dict[str, float]]]
# (model, outputs, labels, ctx, params) → parts to log; sets p.grad itself (custom gradient rules)
GradFn = Callable[[Any, Any, torch.Tensor, StepContext, list], dict[str, float]]


@dataclass
class Stage:
    name: str
    epochs: int
    lr: float
    trains: Callable[[Any], list[torch.nn.Parameter]]  # model → the parameters this stage updates
    loss: LossFn
    gradient: GradFn | None = None  # None: backward of ``loss``


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TwoStageArgs(_Args):
    """DeeBERT. Stage 1: backbone + final exit on the final exit's loss. Stage 2: backbone and final
    exit frozen; exits 1..L-1 trained on the sum of their losses."""

    stage2_lr: float | None = Field(None, gt=0)
    """Learning rate of stage 2 (default: train.lr)."""
    stage2_epochs: int | None = Field(None, ge=0)
    """Epochs of stage 2 (default: train.epochs)."""


class JointArgs(_Args):
    """All parameters, one stage, Σ_i w_i · L_i over all exits."""

    layer_weights: Literal["uniform", "pabee", "sqrt", "inverse"] = "uniform"


class AlternatingArgs(_Args):
    """BERxiT: alternate the final exit's loss and the sum of all exits' losses."""

    every: Literal["step", "epoch"] = "step"
    """Alternate per optimisation step (BERxiT) or per epoch (as MetaBERT describes it)."""


class SelfDistillArgs(TwoStageArgs):
    """DeeBERT+SD / FastBERT: two-stage; stage 2 distils the (frozen) final exit into exits 1..L-1."""

    gamma: float = Field(0.9, ge=0, le=1)
    temperature: float = Field(3.0, gt=0)


class RomeBertArgs(_Args):
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


# ------------------------------------------------------------------------ parameter selections
def _all_params(model) -> list[torch.nn.Parameter]:
    return list(model.parameters())


def _final_exit_and_backbone(model) -> list[torch.nn.Parameter]:
    return list(model.backbone.parameters()) + list(model.heads[-1].parameters())


def _early_exits(model) -> list[torch.nn.Parameter]:
    return [p for head in model.heads[:-1] for p in head.parameters()]


# ------------------------------------------------------------------------ losses
def final_exit_loss(out, labels, ctx):
    loss = exit_losses(out.logits[:, -1:], labels, ctx.regression).sum()
    return loss, {"loss_final": loss.item()}


def early_exits_loss(out, labels, ctx):
    loss = exit_losses(out.logits[:, :-1], labels, ctx.regression).sum()
    return loss, {"loss_exits": loss.item()}


def weighted_exits_loss(weight_fn: Callable[[int], torch.Tensor]) -> LossFn:
    def loss(out, labels, ctx):
        losses = exit_losses(out.logits, labels, ctx.regression)  # Shape: [L]
        total = (weight_fn(losses.numel()).to(losses) * losses).sum()
        return total, {"loss_final": losses[-1].item(), "loss_mean": losses.mean().item()}

    return loss


def self_distill_loss(gamma: float, temperature: float) -> LossFn:
    """Σ_{i<L} [(1−γ)·L_i + γ·T²·KL(p_L(T) ‖ p_i(T))], teacher = final exit, detached."""

    def loss(out, labels, ctx):
        ce = exit_losses(out.logits[:, :-1], labels, ctx.regression)  # Shape: [L-1]
        kd = distill_losses(out.logits[:, :-1], out.logits[:, -1].detach(), temperature, ctx.regression)
        total = ((1 - gamma) * ce + gamma * kd).sum()
        return total, {"loss_sd": total.item(), "loss_kd": kd.sum().item()}

    return loss


def alternating_loss(every: str) -> LossFn:
    """Even steps (or epochs): the final exit's loss; odd: the sum of all exits' losses."""
    all_exits = weighted_exits_loss(LAYER_WEIGHTS["uniform"])

    def loss(out, labels, ctx):
        phase = ctx.step if every == "step" else ctx.epoch - 1
        return final_exit_loss(out, labels, ctx) if phase % 2 == 0 else all_exits(out, labels, ctx)

    return loss


def romebert_parts(out, labels, ctx, gamma, temperature):
    l_final, _ = final_exit_loss(out, labels, ctx)
    l_sd, _ = self_distill_loss(gamma, temperature)(out, labels, ctx)
    return l_final, l_sd


def romebert_gradient(args: RomeBertArgs) -> GradFn:
    """Two backward passes (g_f of L_final, g_s of L_sd), then g* = Proj(g_f) + g_s."""
    project_final = not (args.role_swap and args.task in ("mnli", "qqp"))
    cache: dict[int, set[str]] = {}

    def gradient(model, out, labels, ctx, params):
        l_final, l_sd = romebert_parts(out, labels, ctx, args.gamma, args.temperature)
        names = _param_names(model, params)
        project = cache.setdefault(id(model), set(projection_params(model)))
        g_f = torch.autograd.grad(l_final, params, retain_graph=True, allow_unused=True)
        g_s = torch.autograd.grad(l_sd, params, allow_unused=True)
        grads, parts = regularized_gradients(list(g_f), list(g_s), names, project, project_final)
        for p, g in zip(params, grads):
            p.grad = g
        return {"loss": (l_final + l_sd).item(), "loss_final": l_final.item(), "loss_sd": l_sd.item(), **parts}

    return gradient


def _param_names(model, params) -> list[str]:
    lookup = {id(p): n for n, p in model.named_parameters()}
    return [lookup[id(p)] for p in params]


# ------------------------------------------------------------------------ strategies
def two_stage(train, args: TwoStageArgs, stage2_loss: LossFn = early_exits_loss) -> list[Stage]:
    return [
        Stage("stage1", train.epochs, train.lr, _final_exit_and_backbone, final_exit_loss),
        Stage("stage2", args.stage2_epochs if args.stage2_epochs is not None else train.epochs,
              args.stage2_lr or train.lr, _early_exits, stage2_loss),
    ]


def joint(train, args: JointArgs) -> list[Stage]:
    return [Stage("joint", train.epochs, train.lr, _all_params, weighted_exits_loss(LAYER_WEIGHTS[args.layer_weights]))]


def alternating(train, args: AlternatingArgs) -> list[Stage]:
    return [Stage("alternating", train.epochs, train.lr, _all_params, alternating_loss(args.every))]


def self_distill(train, args: SelfDistillArgs) -> list[Stage]:
    return two_stage(train, args, self_distill_loss(args.gamma, args.temperature))


def romebert(train, args: RomeBertArgs) -> list[Stage]:
    def loss(out, labels, ctx):
        l_final, l_sd = romebert_parts(out, labels, ctx, args.gamma, args.temperature)
        return l_final + l_sd, {"loss_final": l_final.item(), "loss_sd": l_sd.item()}

    gradient = romebert_gradient(args) if args.gradient_regularization else None
    return [Stage("romebert", train.epochs, train.lr, _all_params, loss, gradient)]


STRATEGIES: dict[str, tuple[type[_Args], Callable[[Any, Any], list[Stage]]]] = {
    "two_stage": (TwoStageArgs, two_stage),
    "joint": (JointArgs, joint),
    "alternating": (AlternatingArgs, alternating),
    "self_distill": (SelfDistillArgs, self_distill),
    "romebert": (RomeBertArgs, romebert),
}


def validate_strategy(name: str, args: dict[str, Any]) -> _Args:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    model, _ = STRATEGIES[name]
    try:
        return model.model_validate(args)
    except ValidationError as err:
        first = err.errors()[0]
        key = "args." + ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ValueError(f"{key}: not an argument of strategy {name!r}; "
                             f"its arguments: {', '.join(model.model_fields) or 'none'}") from None
        raise ValueError(f"{key}: {first['msg']}") from None


def build_stages(train, task: str = "") -> list[Stage]:
    """The stages of ``train.strategy`` with its validated arguments."""
    args_model, build = STRATEGIES[train.strategy]
    args = args_model.model_validate(train.args)
    if "task" in args_model.model_fields and not args.task:
        args = args.model_copy(update={"task": task})
    return build(train, args)
