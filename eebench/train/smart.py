"""SMART's smoothness-inducing adversarial regularizer (Jiang et al., 2020), for any strategy.

R_s = max_{‖x' − x‖∞ ≤ ε} ℓ_s(f(x'), f(x)) on the word embeddings, approximated as in the SMART
paper: start from Gaussian noise (σ), take ``steps`` ascent steps of size η normalised in the
∞-norm, then evaluate ℓ_s. ℓ_s is the symmetric KL for classification and the squared error for
regression, averaged over the exits.

The starting noise of each example is drawn from a generator seeded by (seed, stage, step, example
index), and the ascent step's loss is the per-example sum over the *global* batch size: the noise an
example gets does not depend on which process holds it or on how its batch is padded, so a
data-parallel run computes what a single process does."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, reduce: bool = True) -> torch.Tensor:
    """KL(p‖q) + KL(q‖p) over the last dimension; the batch mean, or (``reduce=False``) one value
    per example averaged over the middle dimensions. Shapes: [B, ..., C]."""
    lp, lq = F.log_softmax(p_logits, -1), F.log_softmax(q_logits, -1)
    kl = (lp.exp() * (lp - lq)).sum(-1) + (lq.exp() * (lq - lp)).sum(-1)
    return kl.mean() if reduce else kl.reshape(kl.shape[0], -1).mean(1)


def divergence(adv: torch.Tensor, clean: torch.Tensor, regression: bool) -> torch.Tensor:
    """ℓ_s per example, Shape: [B]."""
    if regression:
        return F.mse_loss(adv, clean, reduction="none").reshape(adv.shape[0], -1).mean(1)
    return symmetric_kl(adv, clean, reduce=False)


class ExampleRows(NamedTuple):
    """A micro-batch's dataset indices and real lengths, as host numbers (read by the loader)."""

    index: list[int]
    lengths: list[int]


def example_noise(rows: ExampleRows, length: int, hidden: int, key: tuple[int, ...], sigma: float,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """σ·N(0, 1) per real token, each example from its own generator (seeded from the key and its dataset
    index: the same noise whichever process or batch it lands in), drawn on ``device``; Shape:
    [B, length, H] (zeros on padding). Nothing is read back from the device."""
    noise = torch.zeros(len(rows.index), length, hidden, device=device)
    for row, (i, n) in enumerate(zip(rows.index, rows.lengths)):
        seed = int(np.random.SeedSequence([*key, int(i)]).generate_state(1)[0])
        generator = torch.Generator(device=device).manual_seed(seed)
        noise[row, : int(n)] = torch.randn(int(n), hidden, generator=generator, device=device)
    return noise * sigma


def smart_regularizer(model, batch: dict, clean_logits: torch.Tensor, regression: bool, cfg,
                      index: ExampleRows | None = None, n_global: int | None = None,
                      key: tuple[int, ...] = (0,)) -> torch.Tensor:
    """The mean of ℓ_s over this batch's examples. cfg: epsilon, sigma, eta, steps
    (eebench.recipe.SmartConfig); ``index`` (dataset indices and real lengths) and ``key`` seed the
    noise, ``n_global`` (the global batch size; default this batch's) scales the ascent step's loss."""
    embeds = model.embed_tokens(batch["input_ids"]).detach()  # Shape: [B, T, H]
    kwargs = {k: v for k, v in batch.items() if k in ("attention_mask", "token_type_ids", "position_ids", "segment_ids")}
    n = embeds.shape[0]
    if index is None:  # a batch outside the training loop: every row counted from the mask (a host read)
        mask = batch.get("attention_mask", torch.ones(embeds.shape[:2], dtype=torch.long))
        index = ExampleRows(list(range(n)), mask.sum(1).tolist())
    noise = example_noise(index, embeds.shape[1], embeds.shape[-1], key, cfg.sigma, embeds.device).to(embeds)
    for _ in range(cfg.steps):
        noise.requires_grad_(True)
        adv = model(inputs_embeds=embeds + noise, **kwargs).logits
        loss = divergence(adv, clean_logits.detach(), regression).sum() / (n_global or n)
        (grad,) = torch.autograd.grad(loss, noise)
        noise = noise.detach() + cfg.eta * grad
        noise = noise / (noise.abs().amax(-1, keepdim=True) + cfg.epsilon)  # ∞-norm projection per token
    adv = model(inputs_embeds=model.embed_tokens(batch["input_ids"]) + noise.detach(), **kwargs).logits
    return divergence(adv, clean_logits, regression).mean()
