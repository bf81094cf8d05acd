"""RomeBERT's gradient regularization: remove the conflicting component of one gradient."""

from __future__ import annotations

import re

import torch


def project_conflict(g: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """g − (g·o / ‖o‖²)·o when g·o < 0, else g unchanged. Flat vectors; returns (g', conflicted as a
    0-dim float tensor). Chosen on the device (no branch on a device value: nothing waits for it)."""
    dot = torch.dot(g, other)
    conflicted = dot < 0
    coef = torch.where(conflicted, dot / other.dot(other).clamp_min(1e-20), torch.zeros_like(dot))
    return g - coef * other, conflicted.to(g.dtype)


_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def projection_params(model) -> list[str]:
    """Parameter names the public RomeBERT code projects over: encoder layers' weights, except the
    last layer, LayerNorms and biases. Everything else gets the plain sum of gradients."""
    last = model.num_layers - 1
    names = []
    for name, _ in model.backbone.named_parameters():
        m = _LAYER.search("." + name)
        if m is None or int(m.group(1)) == last:
            continue
        if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
            continue
        names.append("backbone." + name)
    return names


def regularized_gradients(g_f: list, g_s: list, names: list[str], project: set[str],
                          project_final: bool = True) -> tuple[list, dict[str, float]]:
    """g* = Proj(g_f) + g_s over the ``project`` parameters (flattened together), g_f + g_s elsewhere.

    ``project_final=False`` projects g_s off g_f instead (the public code's role swap)."""
    idx = [i for i, n in enumerate(names) if n in project and g_f[i] is not None and g_s[i] is not None]
    out = [_add(a, b) for a, b in zip(g_f, g_s)]
    if not idx:
        return out, {"gr_conflict": 0.0}
    flat_f = torch.cat([g_f[i].reshape(-1) for i in idx])
    flat_s = torch.cat([g_s[i].reshape(-1) for i in idx])
    if project_final:
        flat_f, conflict = project_conflict(flat_f, flat_s)
    else:
        flat_s, conflict = project_conflict(flat_s, flat_f)
    total = flat_f + flat_s
    offset = 0
    for i in idx:
        n = g_f[i].numel()
        out[i] = total[offset: offset + n].view_as(g_f[i])
        offset += n
    return out, {"gr_conflict": conflict}


def _add(a, b):
    if a is None:
        return b
    return a if b is None else a + b
