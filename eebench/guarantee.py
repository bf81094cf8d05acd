"""Operating points with a guarantee: the most aggressive setting of a policy whose rate of disagreement
with the full model stays ≤ ε with probability ≥ 1 − δ over the calibration draw, by Learn-then-Test
fixed-sequence testing (eebench.maths.ltt) over the policy's ordered settings (Policy.ordered, fixed
before the data is seen, from the most conservative).

The risk of a setting, per example: classification, 1 when the prediction at its exit differs from the
last exit's (the full model's), else 0 (exact binomial p-values); regression, |prediction at the exit −
the full model's| divided by the span of the labels (or of the full model's predictions on an unlabelled
split), capped at 1 (Hoeffding–Bentkus p-values). It needs no labels: consistency with the full model, as
CALM defines it. The guarantee holds for new examples drawn like the calibration split's."""

from __future__ import annotations

import numpy as np

from eebench.errors import UserError
from eebench.maths.ltt import binomial_p, fixed_sequence, hoeffding_bentkus_p
from eebench.metrics import predictions


def per_example_losses(trace, exits: np.ndarray) -> np.ndarray:
    """Losses of each setting's exits, Shape [T, N]: disagreement with the last exit (see the module)."""
    rows = np.arange(exits.shape[1])
    full = predictions(trace.logits[:, -1], trace.regression)  # Shape: [N]
    at_exit = predictions(trace.logits[rows[None, :], exits - 1], trace.regression)  # Shape: [T, N]
    if not trace.regression:
        return (at_exit != full[None, :]).astype(np.float64)
    values = trace.labels if trace.labels is not None else full
    span = float(np.max(values) - np.min(values)) or 1.0
    return np.minimum(np.abs(at_exit - full[None, :]) / span, 1.0)


def lt_test(trace, policy, eps: float, delta: float, settings: list[dict] | None = None) -> dict:
    """The Learn-then-Test choice on ``trace`` (the calibration split): the chosen setting (or None),
    every setting's empirical risk and p-value, and the point-estimate choice for comparison (the most
    aggressive setting whose empirical risk is ≤ ε, with no guarantee)."""
    if not 0 < eps < 1 or not 0 < delta < 1:
        raise UserError(f"--guarantee {eps:g} --delta {delta:g}: both must be in (0, 1)")
    if settings is None:
        if policy.ordered is None:
            raise UserError(f"policy {policy.name!r} has no ordered setting to test in sequence; use one of "
                            f"entropy, max_prob, patience, pcee, cka, lte, static")
        settings = policy.ordered(trace.num_layers, trace.logits.shape[-1], trace.regression)
    exits = policy.exits(trace, settings)  # Shape: [T, N]
    loss = per_example_losses(trace, exits)
    n = loss.shape[1]
    risk = loss.mean(1)
    p = binomial_p(loss.sum(1).round().astype(np.int64), n, eps) if not trace.regression \
        else hoeffding_bentkus_p(risk, n, eps)
    passed = fixed_sequence(p, delta)
    time_pct = 100.0 * exits.mean(1) / trace.num_layers
    within = np.flatnonzero(risk <= eps)
    point = int(within[np.argmin(time_pct[within])]) if len(within) else None
    return {"settings": settings, "risk": risk, "p": p, "time_pct": time_pct, "n": n,
            "chosen": passed - 1 if passed else None, "point_estimate": point}
