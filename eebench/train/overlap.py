"""The gradient all-reduce overlapped with the backward pass, as DistributedDataParallel's buckets do it,
for eebench's own data parallelism (eebench.train.parallel: no DDP wrapper, see there why).

The trained parameters are cut into buckets in reverse order (the backward reaches the last layers
first). A post-accumulate-grad hook on every parameter counts down its bucket; once a bucket's gradients
are all there, its all-reduce starts asynchronously while the backward goes on through earlier layers.
Buckets start strictly in index order, the ones a process saw no gradient for at the end, so every
process issues the same collectives in the same order whatever its graph or timing: a gradient this
process did not compute counts as zeros, exactly as ``Parallel.sum_optional`` counts it.

Only the last backward of a step is overlapped (earlier micro-batches accumulate locally), and only for
a stage whose loss takes one plain backward: stages that take their gradients with
``torch.autograd.grad`` (RomeBERT's parts, MAML) keep the all-reduce after the backward. A stage is
overlapped from its second step on, once the first (synchronous) step has shown that every process
reached every trained parameter; a parameter that no process reaches would otherwise become a zero
gradient instead of none (AdamW would still decay it)."""

from __future__ import annotations

import torch
import torch.distributed as dist

OVERLAP_BUCKET = 1 << 22
"""Elements per overlapped bucket (16 MB of fp32; DDP's default is 25 MB)."""


class OverlappedSum:
    """``arm()`` before the step's last backward, ``finish()`` after it: then every parameter's ``grad`` is
    its sum over processes."""

    def __init__(self, params: list[torch.nn.Parameter], bucket: int = OVERLAP_BUCKET):
        self.params = params
        self.buckets: list[list[torch.nn.Parameter]] = []
        size, key = 0, None
        for p in reversed(params):
            if not self.buckets or size + p.numel() > bucket or (p.dtype, p.device) != key:
                self.buckets.append([])
                size, key = 0, (p.dtype, p.device)
            self.buckets[-1].append(p)
            size += p.numel()
        self.bucket_of = {id(p): k for k, ps in enumerate(self.buckets) for p in ps}
        self._hooks: list = []
        self._pending: list[int] = []
        self._launched: list[tuple[torch.Tensor, object]] = []

    def arm(self) -> None:
        """Start counting: each gradient that arrives brings its bucket closer to its all-reduce."""
        self._pending = [len(ps) for ps in self.buckets]
        self._launched = []
        self._hooks = [p.register_post_accumulate_grad_hook(self._arrived) for p in self.params]

    def _arrived(self, p: torch.nn.Parameter) -> None:
        self._pending[self.bucket_of[id(p)]] -= 1
        while len(self._launched) < len(self.buckets) and self._pending[len(self._launched)] == 0:
            self._launch(len(self._launched))

    def _launch(self, k: int) -> None:
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.buckets[k]])
        self._launched.append((flat, dist.all_reduce(flat, async_op=True)))

    def finish(self) -> None:
        """Start the buckets still waiting (in order), wait for all, write the sums into ``grad``."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for k in range(len(self._launched), len(self.buckets)):
            self._launch(k)
        for (flat, handle), bucket in zip(self._launched, self.buckets):
            handle.wait()
            offset = 0
            for p in bucket:
                part = flat[offset: offset + p.numel()].view_as(p)
                if p.grad is None:
                    p.grad = part.clone()
                else:
                    p.grad.copy_(part)
                offset += p.numel()
        self._launched = []
