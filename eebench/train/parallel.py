"""Data parallelism without DDP: every process holds the whole model, takes its share of each global
batch, and the gradients are summed across processes before the optimizer steps.

eebench does not wrap the model in DistributedDataParallel. Its strategies compute gradients in ways
DDP's backward hooks cannot follow (RomeBERT's two ``autograd.grad`` calls whose results must be
averaged *before* the projection, MAML's functional calls, SMART's adversarial ascent, multitask
views of a shared backbone, stages that freeze half the model). Instead each process's loss is
weighted so that its gradient is its share of the global batch's gradient, and one all-reduce (sum)
after the backward passes gives every process the gradient a single process would compute on the
whole batch. ``Parallel`` with one process is a no-op throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from eebench.train.host_reads import host_values

BUCKET = 1 << 24  # elements per all-reduce bucket (64 MB of fp32)

_HOST_GROUPS: dict = {}


def host_group():
    """The process group for small collectives of host values (which parameters a process reached):
    the default group when it is gloo, else a gloo group beside NCCL (made once, by every process at the
    same collective). NCCL reduces GPU tensors only, and reading the result back would wait for the GPU."""
    if dist.get_backend() == "gloo":
        return None
    world = dist.group.WORLD
    if world not in _HOST_GROUPS:
        _HOST_GROUPS[world] = dist.new_group(backend="gloo")
    return _HOST_GROUPS[world]


@dataclass(frozen=True)
class Parallel:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    """Where collective tensors live (NCCL reduces GPU tensors only)."""
    overlap: bool = True
    """All-reduce gradient buckets while the backward runs (eebench.train.overlap) where a stage allows it."""

    @classmethod
    def from_accelerator(cls, accelerator, overlap: bool = True) -> "Parallel":
        return cls(accelerator.process_index, accelerator.num_processes, accelerator.device, overlap)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    # ---------------------------------------------------------------- batches
    def share(self, indices: list[int]) -> list[int]:
        """This process's contiguous share of a global batch (sizes differ by at most one; the
        shares in rank order are the batch in its order)."""
        return list(np.array_split(np.asarray(indices, dtype=np.int64), self.world)[self.rank])

    # ---------------------------------------------------------------- collectives
    def barrier(self) -> None:
        """Wait for every process. On NCCL the barrier names this process's GPU (without it NCCL guesses
        the device from the rank, which is wrong when ranks and GPUs do not line up)."""
        if self.active:
            if self.device.type == "cuda" and self.device.index is not None:
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        """Sum ``tensors`` over processes, in place, flattened into buckets of like dtype and device."""
        if not self.active or not tensors:
            return
        groups: dict[tuple, list[torch.Tensor]] = {}
        for t in tensors:
            groups.setdefault((t.dtype, t.device), []).append(t)
        for group in groups.values():
            bucket: list[torch.Tensor] = []
            size = 0
            for t in group + [None]:
                if t is None or (bucket and size + t.numel() > BUCKET):
                    flat = torch.cat([b.reshape(-1) for b in bucket])
                    dist.all_reduce(flat)
                    offset = 0
                    for b in bucket:
                        b.copy_(flat[offset: offset + b.numel()].view_as(b))
                        offset += b.numel()
                    bucket, size = [], 0
                if t is not None:
                    bucket.append(t)
                    size += t.numel()

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """p.grad summed over processes. A parameter no process computed a gradient for keeps
        ``grad = None`` (the optimizer skips it, as in a single process); one that some process
        did not reach counts zeros there."""
        for p, g in zip(params, self.sum_optional([p.grad for p in params], params)):
            p.grad = g

    def sum_optional(self, tensors: list[torch.Tensor | None], like: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """``tensors`` summed over processes, where None means "no gradient here": it stays None when
        no process has one, and counts as zeros (shaped as ``like``) where another process does."""
        if not self.active:
            return tensors
        reached = torch.tensor([t is not None for t in tensors], dtype=torch.int32)  # known on the host
        dist.all_reduce(reached, group=host_group())
        with host_values():  # a host tensor reduced over a host group: no device to wait for
            flags = reached.tolist()
        out = [t if t is not None or not r else torch.zeros_like(x) for t, r, x in zip(tensors, flags, like)]
        self.sum_([t for t in out if t is not None])
        return out

    def sum_floats(self, values: dict[str, float | torch.Tensor]) -> dict[str, float]:
        """Sum a dict of numbers (floats or 0-dim tensors on any device) over processes (a key a process
        lacks counts 0 there), read to the host with one copy."""
        keys = self.union(values)
        if not keys:
            return {}
        t = torch.stack([torch.as_tensor(values.get(k, 0.0), dtype=torch.float64).to(self.device).reshape(())
                         for k in keys])
        if self.active:
            dist.all_reduce(t)
        return dict(zip(keys, t.tolist()))

    def union(self, keys) -> list[str]:
        """The sorted union of every process's ``keys``."""
        if not self.active:
            return sorted(keys)
        return sorted(set().union(*self.all_objects(sorted(keys))))

    def all_objects(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def from_main(self, obj: Any) -> Any:
        """The main process's ``obj`` on every process."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The global batch's rows of ``x`` (this process's share in rank order) on every process, this
        process's own rows still carrying their gradient. Every process computes the same function of the
        result, so summing the per-process gradients gives that function's gradient (for batch-coupled
        losses: CsdBERT's teacher ranking and contrastive negatives)."""
        return self.gather_many([x])[0]

    def gather_many(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """``gather_rows`` of several tensors with one exchange of their row counts, shapes and dtypes
        (a collective needs them equal on every process: a disagreement is an error, not a hang)."""
        if not self.active:
            return list(xs)
        mine = [(x.shape[0], tuple(x.shape[1:]), str(x.dtype).removeprefix("torch.")) for x in xs]
        every = self.all_objects(mine)
        out = []
        for k, x in enumerate(xs):
            shapes = [theirs[k] for theirs in every]
            if len({s[1:] for s in shapes}) > 1:
                seen = ", ".join(f"rank {r}: rows {s[1]} {s[2]}" for r, s in enumerate(shapes))
                raise RuntimeError(f"gather_rows: the processes disagree on the rows' shape or dtype ({seen}); "
                                   f"cast before gathering")
            counts = [s[0] for s in shapes]
            width = max(counts)
            padded = x.detach()
            if x.shape[0] < width:
                padded = torch.cat([padded, padded.new_zeros((width - x.shape[0], *x.shape[1:]))])
            parts = [torch.empty_like(padded) for _ in range(self.world)]
            dist.all_gather(parts, padded.contiguous())
            rows = [p[:c] for p, c in zip(parts, counts)]
            rows[self.rank] = x
            out.append(torch.cat(rows))
        return out

    def broadcast_module_(self, module: torch.nn.Module) -> None:
        """Make every process's parameters and buffers equal to the main process's."""
        if not self.active:
            return
        for t in list(module.parameters()) + list(module.buffers()):
            if t.device == self.device:
                dist.broadcast(t.data, src=0)
            else:
                moved = t.data.to(self.device)
                dist.broadcast(moved, src=0)
                t.data.copy_(moved)


def close_process_group() -> None:
    """End the process group once the work is done (NCCL warns, and may hang at exit, without it)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
