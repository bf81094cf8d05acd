"""Exit policies: pure functions from cached per-layer signals to exit layers.

Exit layers are 1-based (1..L). The last layer always exits. One meaning per name:

* ``entropy`` (DeeBERT): exit at the first layer i < L whose prediction entropy H_i < threshold
  (natural log; H = -Σ p log p from a stable log-softmax).
* ``max_prob`` (BERxiT/BERTer confidence): exit at the first layer i < L whose largest class
  probability max_c p_c ≥ threshold.

Each works on many thresholds at once: ``exits(logits, thresholds)`` → Shape [T, N].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from eebench.recipe import DEEBERT_ENTROPY_GRID


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def entropy(logits: np.ndarray) -> np.ndarray:
    """Prediction entropy in nats. logits Shape: [..., C] → [...]."""
    logp = log_softmax(logits.astype(np.float64))
    return -(np.exp(logp) * logp).sum(-1)


def max_prob(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits.astype(np.float64)).max(-1))


def first_layer_where(ok: np.ndarray) -> np.ndarray:
    """ok Shape: [..., N, L-1] (may layer i exit?) → exit layer, 1-based; L where none may."""
    n_layers = ok.shape[-1] + 1
    any_ok = ok.any(-1)
    return np.where(any_ok, ok.argmax(-1) + 1, n_layers)


def threshold_exits(signal: np.ndarray, thresholds: np.ndarray, below: bool) -> np.ndarray:
    """signal Shape: [N, L]; exit at the first i < L with signal < t (below) or ≥ t → Shape: [T, N]."""
    s = signal[None, :, :-1]
    t = np.asarray(thresholds, dtype=np.float64)[:, None, None]
    return first_layer_where(s < t if below else s >= t)


@dataclass(frozen=True)
class Policy:
    name: str
    signal: Callable[[np.ndarray], np.ndarray]  # logits [N, L, C] → [N, L]
    below: bool  # exit when the signal is below the threshold (else at or above)
    default_grid: tuple[float, ...]
    description: str

    def exits(self, logits: np.ndarray, thresholds) -> np.ndarray:
        return threshold_exits(self.signal(logits), np.atleast_1d(thresholds), self.below)

    def candidate_grid(self, logits: np.ndarray, n: int = 200) -> np.ndarray:
        """Thresholds at quantiles of the signal over layers 1..L-1, for fine calibration."""
        s = self.signal(logits)[:, :-1].ravel()
        return np.unique(np.quantile(s, np.linspace(0, 1, n)))


POLICIES: dict[str, Policy] = {
    "entropy": Policy("entropy", entropy, True, tuple(DEEBERT_ENTROPY_GRID),
                      "exit at the first layer whose prediction entropy (nats) is below the threshold"),
    "max_prob": Policy("max_prob", max_prob, False,
                       (1.01, 0.99, 0.98, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5),
                       "exit at the first layer whose largest class probability is at least the threshold"),
}


def exit_summary(exit_layers: np.ndarray, n_layers: int) -> dict:
    """time% = 100 · mean(exit layer) / L; speed-up = L / mean(exit layer); histogram of exit layers."""
    mean_layer = float(exit_layers.mean())
    return {
        "mean_exit_layer": mean_layer,
        "time_pct": 100.0 * mean_layer / n_layers,
        "speedup": n_layers / mean_layer,
        "histogram": np.bincount(exit_layers, minlength=n_layers + 1)[1:].tolist(),
    }
