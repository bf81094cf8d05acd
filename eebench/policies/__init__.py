"""Exit policies: each one module of this package defining ``POLICY`` (eebench.policies.base.Policy):
its parameters and grids, the task types it serves, its offline exits over a trace and its online
step in the engine. The registry below finds the modules by itself: adding a policy is its module
plus its test (docs/contributing.md).

Exit layers are 1-based (1..L); the last layer always exits. One meaning per name (docs/policies.md)."""

from __future__ import annotations

import importlib
import json
import pkgutil

import numpy as np

from eebench.errors import UserError
from eebench.policies.base import CLASSIFICATION, REGISTRY, REGRESSION, LayerView, Policy
from eebench.policies.signals import argmax, first_layer_where
from eebench.maths.timing import time_and_speedup

_SHARED = {"base", "signals"}
_ORDER = ["entropy", "max_prob", "lte", "patience", "pcee", "cka", "static"]  # the listing order


def _discover() -> dict[str, Policy]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in _SHARED or info.name.startswith("_"):
            continue
        policy = importlib.import_module(f"{__name__}.{info.name}").POLICY
        found[policy.name] = policy
    names = [n for n in _ORDER if n in found] + sorted(set(found) - set(_ORDER))
    return {n: found[n] for n in names}


POLICIES: dict[str, Policy] = REGISTRY
POLICIES.update(_discover())


def get_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise UserError(f"unknown exit policy {name!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[name]


def default_policy(regression: bool) -> str:
    """The policy a recipe gets when it names none: DeeBERT's entropy, PABEE's patience on regression."""
    return "patience" if regression else "entropy"


def setting_label(setting: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, list) else f'{v:g}'}" for k, v in setting.items())


def exit_summary(exit_layers: np.ndarray, n_layers: int) -> dict:
    """time% = 100 · mean(exit layer) / L; speed-up = L / mean(exit layer); histogram of exit layers."""
    mean_layer = float(exit_layers.mean())
    return {"mean_exit_layer": mean_layer, **time_and_speedup(mean_layer, n_layers),
            "histogram": np.bincount(exit_layers, minlength=n_layers + 1)[1:].tolist()}


# The signal functions live in eebench.policies.signals (``eebench.policies.entropy`` is the policy's module).
__all__ = ["CLASSIFICATION", "REGRESSION", "LayerView", "POLICIES", "Policy", "argmax", "default_policy",
           "exit_summary", "first_layer_where", "get_policy", "setting_label"]
