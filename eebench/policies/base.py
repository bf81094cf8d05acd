"""What an exit policy is: a record of its parameters, grids, the task types it serves, its offline
decision over a whole trace and its online step inside the engine (eebench.engine), plus the helpers
the threshold policies share."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np
import torch

from eebench.errors import UserError
from eebench.maths.fastsweep import running_min
from eebench.policies.signals import midpoints, threshold_exits

CLASSIFICATION, REGRESSION = "classification", "regression"

REGISTRY: dict[str, "Policy"] = {}
"""Every policy by name, filled by the package (eebench.policies.POLICIES is this very dict)."""


@dataclass
class LayerView:
    """What the engine knows after layer ``i`` (1-based) for the rows still running."""

    i: int
    n_layers: int
    logits: torch.Tensor  # Shape: [n, C] (C = 1: regression)
    pooled: torch.Tensor  # Shape: [n, H], the exit head's pooled input
    hidden: torch.Tensor  # Shape: [n, T, H], layer i's token states
    mask: torch.Tensor  # Shape: [n, T]
    model: Any  # the multi-exit model (its LTE head)
    regression: bool

    @property
    def n(self) -> int:
        return self.logits.shape[0]

    @cached_property
    def values(self) -> np.ndarray:
        """The logits as a float numpy array (computed once per layer)."""
        return self.logits.float().cpu().numpy()


# (setting, view, state) → which rows exit after layer view.i, Shape [n] bool. ``state`` is a dict of
# per-row arrays / tensors (first axis = rows) the policy keeps between layers; the engine drops the
# rows of exited examples from every value.
StepFn = Callable[[dict, LayerView, dict], np.ndarray]


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    params: tuple[str, ...]
    """The setting's keys (a recipe's grid of plain numbers sets the first)."""
    default_grid: Callable[..., list[dict]]
    """(n_layers, regression=False) → the settings swept by default."""
    candidates: Callable[..., list[dict]]
    """(trace, n) → a dense grid for calibration, from the trace's own signal values."""
    exits_fn: Callable[[Any, list[dict]], np.ndarray]
    """(trace, settings) → exit layers, Shape [T, N], 1-based; the last layer always exits."""
    step: StepFn
    """The online decision at one layer (the engine); must agree with ``exits_fn``."""
    tasks: tuple[str, ...] = (CLASSIFICATION, REGRESSION)
    """The task types it serves (entropy of a single regression output is 0: it would exit at once)."""
    needs: str = ""
    """The trace signal beyond logits it reads: "", "lte" or "cka"."""
    defaults: dict = field(default_factory=dict)
    """Values of optional parameters a setting may leave out."""
    fast_keys: Callable | None = None
    """For eebench.maths.fastsweep: (trace, settings) → [(key [N, L-1], thresholds [T], strict, setting
    indices)], or None when a setting has no such form (e.g. per-layer thresholds)."""
    first_layer: Callable[[dict, int], int] = lambda setting, n_layers: 1
    """(setting, n_layers) → the first layer whose head the decision reads (static: its layer)."""
    row_step: Callable[[dict, int, list[float]], bool] | None = None
    """(setting, i, one row's logits as Python floats) → whether that row exits after layer i: the engine's
    decision at batch size 1 for a policy that reads nothing but the row's own logits (no state); must
    agree with ``step``. None: the engine calls ``step``."""
    ordered: Callable[..., list[dict]] | None = None
    """(n_layers, n_classes, regression) → settings from the most conservative (latest exits) to the most
    aggressive, fixed before any data is seen: the sequence Learn-then-Test walks (eebench.guarantee).
    None: the policy has no one ordered parameter."""

    def serves(self, regression: bool) -> bool:
        return (REGRESSION if regression else CLASSIFICATION) in self.tasks

    def check_task(self, regression: bool, where: str = "") -> None:
        """One line when the policy does not serve the task type, naming those that do."""
        if self.serves(regression):
            return
        kind = REGRESSION if regression else CLASSIFICATION
        ok = ", ".join(p.name for p in REGISTRY.values() if p.serves(regression))
        raise UserError(f"{where}exit policy {self.name!r} does not apply to {kind} tasks"
                        + (" (a single output's entropy is 0: every example would exit at layer 1)"
                           if regression and self.name == "entropy" else "") + f"; use one of: {ok}")

    def check(self, trace) -> None:
        self.check_task(bool(trace.regression))
        if self.needs and getattr(trace, self.needs, None) is None:
            hint = ('train with train.strategy = "lte", or add an LTE head to any strategy with train.lte = true'
                    if self.needs == "lte"
                    else "re-run eebench evaluate to store CKA similarities")
            raise UserError(f"policy {self.name!r} needs {self.needs} signals, which this run's trace "
                            f"does not have; {hint}")

    def complete(self, setting: dict) -> dict:
        return {**self.defaults, **setting}

    def exits(self, trace, settings: list[dict]) -> np.ndarray:
        self.check(trace)
        return self.exits_fn(trace, [self.complete(s) for s in settings])

    def fine_grid(self, trace, n: int = 200) -> list[dict]:
        """A dense grid for calibration, from the trace's own signal values."""
        self.check(trace)
        return self.candidates(trace, n)


# ----------------------------------------------------------------------- threshold policies' helpers
def threshold_grid(values):
    return lambda n_layers, regression=False: [{"threshold": v} for v in values]


def signal_candidates(signal_fn):
    return lambda trace, n=200: [{"threshold": t} for t in midpoints(signal_fn(trace)[:, :-1].ravel(), n)]


def signal_threshold_exits(signal_fn, below: bool):
    return lambda trace, settings: threshold_exits(signal_fn(trace), [s["threshold"] for s in settings], below)


def layer_threshold(setting: dict, i: int) -> float:
    """A setting's threshold at layer i (1-based): one number, or one per layer."""
    t = setting["threshold"]
    return t[i - 1] if isinstance(t, (list, tuple)) else t


def _scalar_thresholds(settings) -> np.ndarray | None:
    t = [s["threshold"] for s in settings]
    return None if any(isinstance(v, (list, tuple)) for v in t) else np.asarray(t, dtype=np.float64)


def fast_threshold(signal_fn, below: bool):
    """entropy (exit when H < t) → key = running min of H; max_prob / lte (exit when s ≥ t) →
    key = running min of −s, exit when key ≤ −t."""
    def keys(trace, settings):
        t = _scalar_thresholds(settings)
        if t is None:
            return None
        s = signal_fn(trace)[:, :-1]
        if below:
            return [(running_min(s), t, True, np.arange(len(settings)))]
        return [(running_min(-s), -t, False, np.arange(len(settings)))]
    return keys


def fast_grouped(counts_fn, group_key: str, count_key: str):
    """Settings grouped by one parameter; within a group, exit once a count reaches ``count_key``."""
    def keys(trace, settings):
        groups: dict = {}
        for k, s in enumerate(settings):
            groups.setdefault(s[group_key], []).append(k)
        out = []
        for value, idx in groups.items():
            counts = -counts_fn(trace, value)[:, :-1].astype(np.float64)
            r = np.asarray([settings[k][count_key] for k in idx], dtype=np.float64)
            out.append((running_min(counts), -r, False, np.asarray(idx)))
        return out
    return keys
