"""MetaBERT phase 1: MAML over episodes drawn from the task's training data.

Each optimisation step takes ``meta_batch`` episodes; an episode is a support set of K examples
and a query set of Q examples. Inner loop: ``inner_steps`` SGD steps of size α on the support
loss (Σ of all exits' losses) from θ; outer: the query loss at the adapted parameters, averaged
over episodes, back-propagated to θ (second order, or first order when ``first_order``); the
stage's optimizer (Adam, lr β) applies it. Default backend: torch.func.functional_call; learn2learn's
MAML when installed and chosen."""

from __future__ import annotations

import contextlib

import torch
from torch.func import functional_call

from eebench.train.losses import exit_losses


def _task_loss(model, params: dict, batch: dict, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    out = functional_call(model, params, args=(), kwargs=batch)
    return exit_losses(out.logits, labels, regression).sum()


def adapt(model, params: dict, batch: dict, labels: torch.Tensor, regression: bool, inner_lr: float,
          inner_steps: int, first_order: bool) -> dict:
    """θ' after ``inner_steps`` SGD steps on the support loss: θ' = θ − α ∇θ L_support(θ)."""
    fast = dict(params)
    for _ in range(inner_steps):
        loss = _task_loss(model, fast, batch, labels, regression)
        names = [n for n, p in fast.items() if p.requires_grad]
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=not first_order,
                                    allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                fast[n] = fast[n] - inner_lr * g
    return fast


def split_episodes(batch: dict, labels: torch.Tensor, meta_batch: int, support: int):
    """Cut one loader batch into ``meta_batch`` (support, query) episodes."""
    n = labels.shape[0]
    size = n // meta_batch
    for e in range(meta_batch):
        lo, mid, hi = e * size, e * size + support, (e + 1) * size
        if mid >= hi:
            continue
        pick = lambda a, b: ({k: v[a:b] for k, v in batch.items()}, labels[a:b])  # noqa: E731
        yield pick(lo, mid), pick(mid, hi)


@contextlib.contextmanager
def second_order_ready(model, needed: bool = True):
    """Second derivatives need eager attention (the fused SDPA kernels have no double backward): the
    backbone runs eager inside the block and returns to its own implementation after it, so the rest
    of the run (later stages, evaluation, the trace) keeps the fast kernels."""
    config = model.backbone.config
    before = getattr(config, "_attn_implementation", "eager")
    switch = needed and before != "eager" and hasattr(model.backbone, "set_attn_implementation")
    if switch:
        model.backbone.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.backbone.set_attn_implementation(before)


def my_episodes(batch, labels, args, parallel=None) -> tuple[list, int]:
    """This process's episodes of the global batch (every ``world``-th, from its rank) and the count
    of all episodes: each episode's query loss is divided by the latter, so the gradients summed over
    processes are the single-process meta-gradient."""
    episodes = list(split_episodes(batch, labels, args.meta_batch, args.support_size))
    if parallel is not None and parallel.active:
        return episodes[parallel.rank:: parallel.world], len(episodes)
    return episodes, len(episodes)


def maml_step_torch_func(model, batch, labels, regression, args, parallel=None, backward=None) -> dict[str, float]:
    backward = backward or (lambda loss: loss.backward())
    params = {n: p for n, p in model.named_parameters()}
    mine, count = my_episodes(batch, labels, args, parallel)
    total = 0.0
    with second_order_ready(model, not args.first_order):
        for (s_batch, s_labels), (q_batch, q_labels) in mine:
            fast = adapt(model, params, s_batch, s_labels, regression, args.inner_lr, args.inner_steps,
                         args.first_order)
            loss = _task_loss(model, fast, q_batch, q_labels, regression) / count
            backward(loss)
            total = total + loss.detach()
    return {"loss": total, "loss_query": total}


def maml_step_learn2learn(model, batch, labels, regression, args, parallel=None, backward=None) -> dict[str, float]:
    import learn2learn as l2l

    backward = backward or (lambda loss: loss.backward())
    maml = l2l.algorithms.MAML(model, lr=args.inner_lr, first_order=args.first_order)
    mine, count = my_episodes(batch, labels, args, parallel)
    total = 0.0
    with second_order_ready(model, not args.first_order):
        for (s_batch, s_labels), (q_batch, q_labels) in mine:
            learner = maml.clone()
            for _ in range(args.inner_steps):
                learner.adapt(exit_losses(learner(**s_batch).logits, s_labels, regression).sum())
            loss = exit_losses(learner(**q_batch).logits, q_labels, regression).sum() / count
            backward(loss)
            total = total + loss.detach()
    return {"loss": total, "loss_query": total}


def learn2learn_available() -> bool:
    try:
        import learn2learn  # noqa: F401
    except Exception:  # ImportError, or its own missing dependencies (torchvision, gym)
        return False
    return True
