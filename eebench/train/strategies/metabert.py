"""MetaBERT: MAML on episodes (phase 1), then all exits jointly (phase 2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eebench.train.losses import LAYER_WEIGHTS
from eebench.train.strategies.base import Strategy, GradFn, Stage, StrategyArgs, all_params, weighted_exits_loss


class MetaBertArgs(StrategyArgs):
    """MetaBERT: phase 1 meta-learns θ with MAML on episodes from the training data (Algorithm 1);
    phase 2 trains all exits jointly from θ with the sum of their losses (Algorithm 2)."""

    meta_epochs: int = Field(1, ge=0)
    """Passes of phase 1 over the training data."""
    support_size: int = Field(16, ge=1)
    """K: examples in an episode's support set (the inner update). MetaBERT follows MAML [29] without
    numbers; 16 is eebench's choice, half the paper's training batch of 32 (docs/methods.md)."""
    query_size: int = Field(16, ge=1)
    """Examples in an episode's query set (the outer loss); 16, the other half of the batch of 32."""
    meta_batch: int = Field(2, ge=1)
    """Episodes per outer update."""
    inner_lr: float = Field(1e-3, gt=0)
    """α: step of the inner SGD update. MAML's 0.01-0.4 are for 4-layer conv nets and wreck pretrained
    BERT's weights in one step; 1e-3 is eebench's choice."""
    inner_steps: int = Field(1, ge=1)
    """SGD steps of the inner loop (MAML's usual one at meta-training time)."""
    first_order: bool = False
    """True: first-order MAML (no second derivatives); False: full second-order MAML."""
    meta_lr: float | None = Field(None, gt=0)
    """β: the outer (Adam) learning rate; default train.lr. MetaBERT gives 2e-5 as Adam's learning rate
    (§IV.A), not as a β; MAML's meta lr 1e-3 is for conv nets."""
    backend: Literal["auto", "torch_func", "learn2learn"] = "auto"
    """auto: learn2learn when it imports, else torch.func."""


def metabert_gradient(args: MetaBertArgs) -> GradFn:
    from eebench.train.maml import learn2learn_available, maml_step_learn2learn, maml_step_torch_func

    use_l2l = args.backend == "learn2learn" or (args.backend == "auto" and learn2learn_available())
    step = maml_step_learn2learn if use_l2l else maml_step_torch_func

    def gradient(model, batch, labels, ctx, params):
        return step(model, batch, labels, ctx.regression, args, ctx.parallel, ctx.backward)

    return gradient


def metabert(train, args: MetaBertArgs, n_layers: int | None = None) -> list[Stage]:
    episode = args.support_size + args.query_size
    return [
        Stage("meta", args.meta_epochs, args.meta_lr or train.lr, all_params,
              weighted_exits_loss(LAYER_WEIGHTS["uniform"]), metabert_gradient(args),
              batch_size=episode * args.meta_batch),
        Stage("joint", train.epochs, train.lr, all_params, weighted_exits_loss(LAYER_WEIGHTS["uniform"])),
    ]


REGISTRY = {"metabert": Strategy(MetaBertArgs, metabert)}
"""The strategies this module defines (eebench.train.strategies collects every module's)."""
