"""SMART's smoothness-inducing adversarial regularizer (Jiang et al., 2020), for any strategy.

R_s = max_{‖x' − x‖∞ ≤ ε} ℓ_s(f(x'), f(x)) on the word embeddings, approximated as in the SMART
paper: start from Gaussian noise (σ), take ``steps`` ascent steps of size η normalised in the
∞-norm, then evaluate ℓ_s. ℓ_s is the symmetric KL for classification and the squared error for
regression, averaged over the exits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) + KL(q‖p), batch mean, over the last dimension. Shapes: [..., C]."""
    lp, lq = F.log_softmax(p_logits, -1), F.log_softmax(q_logits, -1)
    kl = (lp.exp() * (lp - lq)).sum(-1) + (lq.exp() * (lq - lp)).sum(-1)
    return kl.mean()


def divergence(adv: torch.Tensor, clean: torch.Tensor, regression: bool) -> torch.Tensor:
    if regression:
        return F.mse_loss(adv, clean)
    return symmetric_kl(adv, clean)


def smart_regularizer(model, batch: dict, clean_logits: torch.Tensor, regression: bool, cfg) -> torch.Tensor:
    """cfg: epsilon, sigma, eta, steps (eebench.recipe.SmartConfig)."""
    embeds = model.embed_tokens(batch["input_ids"]).detach()  # Shape: [B, T, H]
    kwargs = {k: v for k, v in batch.items() if k in ("attention_mask", "token_type_ids", "position_ids", "segment_ids")}
    noise = torch.randn_like(embeds) * cfg.sigma
    for _ in range(cfg.steps):
        noise.requires_grad_(True)
        adv = model(inputs_embeds=embeds + noise, **kwargs).logits
        loss = divergence(adv, clean_logits.detach(), regression)
        (grad,) = torch.autograd.grad(loss, noise)
        noise = noise.detach() + cfg.eta * grad
        noise = noise / (noise.abs().amax(-1, keepdim=True) + cfg.epsilon)  # ∞-norm projection per token
    adv = model(inputs_embeds=model.embed_tokens(batch["input_ids"]) + noise.detach(), **kwargs).logits
    return divergence(adv, clean_logits, regression)
