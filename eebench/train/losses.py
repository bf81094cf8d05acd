"""Per-exit losses, distillation terms and per-layer weight functions (small pure functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eebench.model.similarity import logits_cosine


def exit_losses(logits: torch.Tensor, labels: torch.Tensor, regression: bool,
                pair_loss: str = "cross_entropy") -> torch.Tensor:
    """Mean loss of every exit. logits Shape: [B, L, C]; labels Shape: [B] → Shape: [L].

    Classification: cross-entropy; regression (C = 1): mean squared error; ``pair_loss = "cosine"``:
    PyTorch's CosineEmbeddingLoss with margin 0 on each exit's cosine (1 − cos for a duplicate pair,
    max(0, cos) otherwise)."""
    b, n_layers, c = logits.shape
    if pair_loss == "cosine":
        cos = logits_cosine(logits)  # Shape: [B, L]
        positive = (labels == 1)[:, None]
        return torch.where(positive, 1.0 - cos, cos.clamp(min=0.0)).mean(0)
    if regression:
        target = labels.to(logits.dtype).unsqueeze(1).expand(b, n_layers)
        return F.mse_loss(logits[..., 0], target, reduction="none").mean(0)
    flat = F.cross_entropy(logits.reshape(b * n_layers, c), labels.repeat_interleave(n_layers),
                           reduction="none")
    return flat.view(b, n_layers).mean(0)


def distill_losses(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                   regression: bool, class_mean: bool = False) -> torch.Tensor:
    """T² · KL(p_teacher(T) ‖ p_student(T)) per student exit, batch-mean reduction.

    student Shape: [B, S, C]; teacher Shape: [B, C] (detached by the caller) → Shape: [S].
    ``class_mean`` also divides by C, as ``nn.KLDivLoss()`` with its default 'mean' reduction does
    (RomeBERT's public code). Regression: mean squared error to the teacher's prediction (no temperature)."""
    if regression:
        return F.mse_loss(student[..., 0], teacher[:, None, 0].expand_as(student[..., 0]),
                          reduction="none").mean(0)
    t = temperature
    log_p_student = F.log_softmax(student / t, dim=-1)  # Shape: [B, S, C]
    log_p_teacher = F.log_softmax(teacher / t, dim=-1)[:, None, :]  # Shape: [B, 1, C]
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)  # Shape: [B, S]
    return t * t * kl.mean(0) / (student.shape[-1] if class_mean else 1)


def uniform_weights(n_layers: int) -> torch.Tensor:
    """Every exit weighs 1: the plain sum of the exits' losses (DeeBERT, BERxiT)."""
    return torch.ones(n_layers)


def layer_index_weights(n_layers: int) -> torch.Tensor:
    """PABEE: exit i weighs i, normalised to sum to 1 (Σ i·L_i / Σ i)."""
    w = torch.arange(1, n_layers + 1, dtype=torch.float32)
    return w / w.sum()


def sqrt_weights(n_layers: int) -> torch.Tensor:
    """Exit i weighs √i, normalised to sum to 1."""
    w = torch.arange(1, n_layers + 1, dtype=torch.float32).sqrt()
    return w / w.sum()


def inverse_weights(n_layers: int) -> torch.Tensor:
    """Exit i weighs 1/i, normalised to sum to 1 (favours early exits)."""
    w = 1.0 / torch.arange(1, n_layers + 1, dtype=torch.float32)
    return w / w.sum()


LAYER_WEIGHTS = {
    "uniform": uniform_weights,
    "pabee": layer_index_weights,
    "sqrt": sqrt_weights,
    "inverse": inverse_weights,
}
