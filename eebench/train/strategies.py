"""Training strategies as named units: a list of stages, each a loss over all exits' outputs plus
which parameters it trains. Recipes select one with ``train.strategy`` and give its ``train.args``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eebench.train.losses import LAYER_WEIGHTS, exit_losses

LossFn = Callable[["ExitOutputs", torch.Tensor, bool], tuple[torch.Tensor, dict[str, float]]]  # noqa: F821


@dataclass
class Stage:
    name: str
    epochs: int
    lr: float
    trains: Callable[[Any], list[torch.nn.Parameter]]  # model → the parameters this stage updates
    loss: LossFn  # (outputs, labels, regression) → (loss, parts to log)


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


def _all_params(model) -> list[torch.nn.Parameter]:
    return list(model.parameters())


def _final_exit_and_backbone(model) -> list[torch.nn.Parameter]:
    return list(model.backbone.parameters()) + list(model.heads[-1].parameters())


def _early_exits(model) -> list[torch.nn.Parameter]:
    return [p for head in model.heads[:-1] for p in head.parameters()]


def final_exit_loss(out, labels, regression):
    losses = exit_losses(out.logits[:, -1:], labels, regression)
    return losses.sum(), {"loss_final": losses.item()}


def early_exits_loss(out, labels, regression):
    losses = exit_losses(out.logits[:, :-1], labels, regression)
    return losses.sum(), {"loss_exits": losses.sum().item()}


def weighted_exits_loss(weight_fn: Callable[[int], torch.Tensor]) -> LossFn:
    def loss(out, labels, regression):
        losses = exit_losses(out.logits, labels, regression)  # Shape: [L]
        total = (weight_fn(losses.numel()).to(losses) * losses).sum()
        return total, {"loss_final": losses[-1].item(), "loss_mean": losses.mean().item()}

    return loss


def two_stage(train, args: TwoStageArgs) -> list[Stage]:
    return [
        Stage("stage1", train.epochs, train.lr, _final_exit_and_backbone, final_exit_loss),
        Stage("stage2", args.stage2_epochs if args.stage2_epochs is not None else train.epochs,
              args.stage2_lr or train.lr, _early_exits, early_exits_loss),
    ]


def joint(train, args: JointArgs) -> list[Stage]:
    return [Stage("joint", train.epochs, train.lr, _all_params, weighted_exits_loss(LAYER_WEIGHTS[args.layer_weights]))]


STRATEGIES: dict[str, tuple[type[_Args], Callable[[Any, Any], list[Stage]]]] = {
    "two_stage": (TwoStageArgs, two_stage),
    "joint": (JointArgs, joint),
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


def build_stages(train) -> list[Stage]:
    """The stages of ``train.strategy`` with its validated arguments."""
    args_model, build = STRATEGIES[train.strategy]
    return build(train, args_model.model_validate(train.args))
