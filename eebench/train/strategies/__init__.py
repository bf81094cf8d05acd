"""Training strategies as named units: a list of stages, each a loss over all exits' outputs plus
which parameters it trains. Recipes select one with ``train.strategy`` and give its ``train.args``.
One module per family (base, deebert, romebert, lte, csdbert, berter, metabert); the registry below
holds each as a Strategy record with its traits. docs/methods.md gives each formula and the choices made."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from pydantic import ValidationError

from eebench.train.strategies.base import Stage, StepContext, Strategy, StrategyArgs
from eebench.train.strategies.lte import with_lte


def _collect() -> dict[str, Strategy]:
    """Every family module's REGISTRY (the modules are found by themselves: a new family is a new
    module; base is shared), by name."""
    found: dict[str, Strategy] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, strategy in getattr(module, "REGISTRY", {}).items():
            if name in found:
                raise RuntimeError(f"strategy {name!r} is defined twice ({info.name})")
            found[name] = strategy
    return dict(sorted(found.items()))  # listings and errors in name order


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


def validate_strategy(name: str, args: dict[str, Any]) -> StrategyArgs:
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


__all__ = ["STRATEGIES", "Stage", "StepContext", "build_stages", "needs_dev_metrics", "needs_lte_head",
           "validate_strategy"]
