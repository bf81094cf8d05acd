"""Analytic compute of a BERT-style encoder with exit heads, for any exit distribution.

MACs (multiply-accumulates) per example of T tokens, hidden H, feed-forward I, C classes:
  one layer:  T·(4H² + 2·H·I) + 2·T²·H   (Q, K, V, output projections; FFN; QKᵀ and AV)
  one exit head: H² + H·C                 (pooler dense; classifier)
An example leaving at layer i runs i layers and i exit heads (each head decides whether to exit).
Embedding lookups, LayerNorms, softmax and biases are left out (under 1% of BERT-base's MACs at
T = 128). FLOPs = 2 × MACs."""

from __future__ import annotations

import numpy as np


def layer_macs(tokens: np.ndarray, hidden: int, intermediate: int) -> np.ndarray:
    t = np.asarray(tokens, dtype=np.float64)
    return t * (4 * hidden**2 + 2 * hidden * intermediate) + 2 * t**2 * hidden


def head_macs(hidden: int, num_labels: int) -> int:
    return hidden**2 + hidden * num_labels


def exit_macs(exit_layers: np.ndarray, tokens: np.ndarray, n_layers: int, hidden: int, intermediate: int,
              num_labels: int, per_layer: np.ndarray | None = None) -> dict[str, float]:
    """Mean MACs and FLOPs per example at the given exits, and for the full model (all L layers,
    the final head only); exit_layers and tokens Shape: [N]. ``per_layer`` (Shape [N]): one layer's
    MACs per example from the encoder family's own formula (eebench.model.families), else BERT's."""
    if per_layer is None:
        per_layer = layer_macs(tokens, hidden, intermediate)  # Shape: [N]
    backbone = float((per_layer * exit_layers).mean())
    heads = float(head_macs(hidden, num_labels) * np.mean(exit_layers))
    full = float(per_layer.mean() * n_layers + head_macs(hidden, num_labels))
    return {"macs_backbone": backbone, "macs_heads": heads, "macs": backbone + heads,
            "flops": 2 * (backbone + heads), "macs_full_model": full,
            "macs_saved_fraction": 1 - (backbone + heads) / full}
