"""CsdBERT's contrastive self-distillation terms (pure functions over all exits' outputs)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from eebench.train.losses import distill_losses


def split_teachers(per_exit_loss: torch.Tensor, n_teachers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank exits by loss (ascending): the n lowest are teachers, the rest students (in that order,
    so student m = 1 has the smallest loss among students)."""
    order = per_exit_loss.detach().argsort()
    return order[:n_teachers], order[n_teachers:]


def contrastive_loss(teacher: torch.Tensor, student: torch.Tensor, tau: float) -> torch.Tensor:
    """Normalised-softmax (InfoNCE) loss: for each example i, the ensemble teacher's representation
    should be closest (cosine / τ) to the student's representation of the same example among the batch.
    teacher, student Shape: [B, H]."""
    t = F.normalize(teacher, dim=-1)
    s = F.normalize(student, dim=-1)
    sim = t @ s.T / tau  # Shape: [B, B]
    return F.cross_entropy(sim, torch.arange(sim.shape[0], device=sim.device))


def student_weights(n_students: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Eq. 8: student m weighs m / Σ m (built on ``device``: no copy from the host in a step)."""
    w = torch.arange(1, n_students + 1, dtype=torch.float32, device=device)
    return w / w.sum()


def difficulty(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 9: Dif = Σ p log p / log(1/Y), the normalised entropy in [0, 1]. logits [..., Y] → [...]."""
    logp = F.log_softmax(logits, dim=-1)
    return (logp.exp() * logp).sum(-1) / math.log(1.0 / logits.shape[-1])


def expert_teacher(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 10: T_exp = Σ_n Dif⁽ⁿ⁾ · T_n, per example. teacher_logits Shape: [B, N, C] → [B, C]."""
    return (difficulty(teacher_logits)[..., None] * teacher_logits).sum(1)


def csdbert_terms(logits: torch.Tensor, first_token: torch.Tensor, per_exit_loss: torch.Tensor,
                  n_teachers: int, tau: float, kd_temperature: float, regression: bool,
                  use_scl: bool = True, use_kd: bool = True) -> dict[str, torch.Tensor]:
    """L_SCL and L_KD of one batch. logits [B, L, C]; first_token [B, L, H]; per_exit_loss [L]."""
    teachers, students = split_teachers(per_exit_loss, n_teachers)
    terms: dict[str, torch.Tensor] = {}
    if use_scl and len(students):
        ens = first_token[:, teachers].mean(1).detach()  # Shape: [B, H]; the ensemble teacher
        per = torch.stack([contrastive_loss(ens, first_token[:, s], tau) for s in students])
        terms["scl"] = (student_weights(len(students), per.device).to(per.dtype) * per).sum()
    if use_kd and len(students) and not regression:
        t_exp = expert_teacher(logits[:, teachers].detach())  # Shape: [B, C]
        terms["kd"] = distill_losses(logits[:, students], t_exp, kd_temperature, regression).sum()
    return terms
