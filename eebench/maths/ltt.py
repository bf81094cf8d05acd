"""Learn-then-Test (Angelopoulos et al., 2021) by fixed-sequence testing, as CALM (Schuster et al., 2022)
calibrates its exits: pure maths over per-setting losses.

Settings λ_1, λ_2, ... are ordered before any data is seen, from the most conservative to the most
aggressive. For each, H_j: R(λ_j) > ε, tested with a valid p-value from the calibration losses; walking
the sequence, every H_j is rejected while p_j ≤ δ, and the walk stops at the first that is not. Every
rejected setting then has risk ≤ ε, all at once, with probability ≥ 1 − δ over the calibration draw
(fixed-sequence testing controls the family-wise error at δ without a multiplicity correction). The
chosen setting is the last rejected one, the most aggressive with the guarantee.

p-values: losses in {0, 1} (a prediction that differs from the full model's): exact binomial,
P(Binomial(n, ε) ≤ k); losses in [0, 1]: Hoeffding–Bentkus, min(exp(−n·h(r̂, ε)), e·P(Binomial(n, ε) ≤ ⌈n·r̂⌉)).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom


def binomial_p(errors: np.ndarray, n: int, eps: float) -> np.ndarray:
    """Exact binomial p-values of H: risk > eps, from the count of losses of 1 among n."""
    return binom.cdf(np.asarray(errors), n, eps)


def hoeffding_bentkus_p(mean_loss: np.ndarray, n: int, eps: float) -> np.ndarray:
    """Hoeffding–Bentkus p-values of H: risk > eps for losses in [0, 1] with mean ``mean_loss``."""
    r = np.minimum(np.asarray(mean_loss, dtype=np.float64), eps)  # at or above eps: p is 1 from both bounds
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(r > 0, r * np.log(r / eps), 0.0) + (1 - r) * np.log((1 - r) / (1 - eps))
    hoeffding = np.exp(-n * h)
    bentkus = np.e * binom.cdf(np.ceil(n * np.asarray(mean_loss)), n, eps)
    return np.minimum(1.0, np.minimum(hoeffding, bentkus))


def fixed_sequence(p_values: np.ndarray, delta: float) -> int:
    """How many leading hypotheses are rejected (p ≤ delta, in order, stopping at the first that is not);
    the chosen setting is index count − 1, none when 0."""
    passed = np.asarray(p_values) <= delta
    return int(np.argmin(passed)) if not passed.all() else len(passed)
