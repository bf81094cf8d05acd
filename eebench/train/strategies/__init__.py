"""Training strategies as named units: a list of stages, each a loss over all exits' outputs plus
which parameters it trains. Recipes select one with ``train.strategy`` and give its ``train.args``.
One module per family (base, deebert, romebert, lte, csdbert, berter, metabert); the registry below
holds each as a Strategy record with its traits. docs/methods.md gives each formula and the choices made."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from pydantic import ValidationError

from eebench.train.strategies.base import (CombineFn, GradFn, LossFn, NoArgs, PartsFn, Stage, StepContext,
                                           Strategy, _Args, early_exits_loss, final_exit_loss,
                                           weighted_exits_loss)
from eebench.train.strategies.berter import (SlfArgs, SmartAlternatingArgs, finetune, head_only, slf,
                                             smart_alternating, smart_alternating_loss, smart_alternating_phase)
from eebench.train.strategies.csdbert import CsdBertArgs, csdbert, csdbert_loss
from eebench.train.strategies.deebert import (AlternatingArgs, JointArgs, SelfDistillArgs, TwoStageArgs,
                                              alternating, alternating_loss, joint, self_distill,
                                              self_distill_loss, two_stage)
from eebench.train.strategies.lte import LteArgs, lte, lte_loss, lte_loss_fn, lte_targets, plus_lte, with_lte
from eebench.train.strategies.metabert import MetaBertArgs, metabert, metabert_gradient
from eebench.train.strategies.romebert import RomeBertArgs, romebert, romebert_combine, romebert_parts


def _collect() -> dict[str, Strategy]:
    """Every family module's REGISTRY (the package's modules, found by themselves; base is shared)."""
    found: dict[str, Strategy] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, strategy in getattr(module, "REGISTRY", {}).items():
            if name in found:
                raise RuntimeError(f"strategy {name!r} is defined twice ({info.name})")
            found[name] = strategy
    order = ["two_stage", "joint", "alternating", "self_distill", "romebert", "lte", "csdbert", "slf",
             "smart_alternating", "metabert", "finetune", "head_only"]  # the listing order; new ones after
    return {n: found[n] for n in [*[o for o in order if o in found], *sorted(set(found) - set(order))]}


STRATEGIES: dict[str, Strategy] = _collect()


def needs_dev_metrics(train) -> bool:
    """Strategies that choose each epoch's objective from dev metrics (Smart Alternating)."""
    strategy = STRATEGIES[train.strategy]
    return strategy.dev_metrics(strategy.args.model_validate(train.args))


PAPER_NAMES = {"deebert": ("two_stage", ""), "deebert_sd": ("self_distill", ""),
               "fastbert": ("self_distill", ' with args = { gamma = 1, temperature = 1, kd_reduction = "batchmean" }'),
               "pabee": ("joint", ' with args = { layer_weights = "pabee" }'), "berxit": ("alternating", ""),
               "berter": ("slf", "")}
"""A paper's name → the strategy that trains as it does (and its arguments), for the error's hint."""


def validate_strategy(name: str, args: dict[str, Any]) -> _Args:
    if name not in STRATEGIES:
        key = name.lower().replace("+", "_").replace("-", "_")
        if key in PAPER_NAMES:
            strategy, extra = PAPER_NAMES[key]
            raise ValueError(f"no strategy is named {name!r}: {name} trains with strategy = \"{strategy}\"{extra} "
                             f"(docs/methods.md)")
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    model = STRATEGIES[name].args
    try:
        return model.model_validate(args)
    except ValidationError as err:
        first = err.errors()[0]
        key = "args." + ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ValueError(f"{key}: not an argument of strategy {name!r}; "
                             f"its arguments: {', '.join(model.model_fields) or 'none'}") from None
        raise ValueError(f"{key}: {first['msg']}") from None


def build_stages(train, task: str = "", n_layers: int | None = None) -> list[Stage]:
    """The stages of ``train.strategy`` with its validated arguments (and the LTE term when train.lte)."""
    strategy = STRATEGIES[train.strategy]
    args = strategy.args.model_validate(train.args)
    if "task" in strategy.args.model_fields and not args.task:
        args = args.model_copy(update={"task": task})
    stages = strategy.build(train, args, n_layers)
    return with_lte(stages) if getattr(train, "lte", False) and not strategy.lte_head else stages


def needs_lte_head(train) -> bool:
    return STRATEGIES[train.strategy].lte_head or bool(getattr(train, "lte", False))


__all__ = ["AlternatingArgs", "CombineFn", "CsdBertArgs", "GradFn", "JointArgs", "LossFn", "LteArgs",
           "MetaBertArgs", "NoArgs", "PartsFn", "RomeBertArgs", "STRATEGIES", "SelfDistillArgs", "SlfArgs",
           "SmartAlternatingArgs", "Stage", "StepContext", "Strategy", "TwoStageArgs", "_Args", "alternating",
           "alternating_loss", "build_stages", "csdbert", "csdbert_loss", "early_exits_loss", "final_exit_loss",
           "finetune", "head_only", "joint", "lte", "lte_loss", "lte_loss_fn", "lte_targets", "metabert",
           "metabert_gradient", "needs_dev_metrics", "needs_lte_head", "plus_lte", "romebert", "romebert_combine",
           "romebert_parts", "self_distill", "self_distill_loss", "slf", "smart_alternating",
           "smart_alternating_loss", "smart_alternating_phase", "two_stage", "validate_strategy",
           "weighted_exits_loss", "with_lte"]
