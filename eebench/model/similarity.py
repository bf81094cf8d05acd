"""Per-layer signals computed inside a pass over the model (shared by the trace and the engine)."""

from __future__ import annotations

import torch


def centered_gram(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Linear kernel over one example's real tokens, centred: K = Xc Xcᵀ with Xc the token vectors
    minus their mean; padded tokens are zero rows. hidden Shape: [B, T, H]; mask [B, T] → [B, T, T]."""
    with torch.autocast(hidden.device.type, enabled=False):  # an exit signal: fp32 even under bf16 / fp16
        m = mask.unsqueeze(-1).to(torch.float32)
        x = hidden.to(torch.float32) * m
        mean = x.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)
        xc = (x - mean) * m
        return xc @ xc.transpose(1, 2)


def linear_cka(gram_a: torch.Tensor, gram_b: torch.Tensor) -> torch.Tensor:
    """CKA = HSIC(a, b) / sqrt(HSIC(a, a) · HSIC(b, b)) with centred Gram matrices (the 1/(n−1)²
    factors cancel). Shapes: [B, T, T] → [B]."""
    hsic = (gram_a * gram_b).sum((1, 2))
    norm = (gram_a * gram_a).sum((1, 2)).sqrt() * (gram_b * gram_b).sum((1, 2)).sqrt()
    return hsic / norm.clamp(min=1e-12)


COSINE_SCALE = 10.0
"""Cosine pair heads (BERTer's cosine embedding loss): logits = (−z/2, z/2), z = COSINE_SCALE·(cos − 0.5),
so p(duplicate) = σ(z) and the prediction is ``cos > 0.5``; the cosine is recovered exactly from them."""


def cosine_logits(cos: torch.Tensor) -> torch.Tensor:
    """cos Shape: [...] → two-class logits Shape: [..., 2]."""
    z = COSINE_SCALE * (cos - 0.5)
    return torch.stack([-z / 2, z / 2], -1)


def logits_cosine(logits: torch.Tensor) -> torch.Tensor:
    """The inverse of ``cosine_logits``: [..., 2] → cos [...]."""
    return (logits[..., 1] - logits[..., 0]) / COSINE_SCALE + 0.5
