"""Host reads: the calls that make the host wait for a device value (``.item()``, ``.tolist()``,
``.cpu()``, ``.numpy()``, ``bool(tensor)``, ``float(tensor)``, a copy to the CPU). On a GPU each one
drains the queue, so a training step should make none outside the logging step; `HostReads` counts
them on any device (on the CPU they cost nothing, but the same code path runs on a GPU), so a CPU
test catches a step that would stall a GPU."""

from __future__ import annotations

import warnings
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"}


def _to_host(func, args, kwargs) -> bool:
    """``tensor.to("cpu")``: a copy to the host named as such. (``.to(device)`` with the run's device is a
    copy to the device on a GPU; on the CPU both read the same, so only the spelled-out host counts.)"""
    if getattr(func, "__name__", "") != "to":
        return False
    return any(isinstance(t, str) and t.startswith("cpu") for t in (*args[1:], kwargs.get("device")))


_HOST_VALUES = [0]


@contextmanager
def host_values() -> Iterator[None]:
    """A read of a tensor that lives on the host by construction (built from Python values, reduced over a
    host process group): nothing waits for a device, so `HostReads` does not count it."""
    _HOST_VALUES[0] += 1
    try:
        yield
    finally:
        _HOST_VALUES[0] -= 1


def _in_optimizer() -> bool:
    """A read made inside torch.optim: its step counts live on the host by design (no device wait)."""
    import sys

    frame = sys._getframe(2)
    return "torch/optim/" in frame.f_code.co_filename.replace("\\", "/")


def _caller() -> str:
    """The innermost eebench frame outside this module: where a read happens."""
    import traceback

    for frame in reversed(traceback.extract_stack()[:-2]):
        if "eebench" in frame.filename and not frame.filename.endswith("host_reads.py"):
            return f"{frame.filename.split('eebench/')[-1]}:{frame.lineno}"
    return "?"


class HostReads(TorchFunctionMode):
    """``with HostReads() as reads: ...`` then ``reads.count`` (total) and ``reads.by_call`` (which)."""

    def __init__(self, where: bool = False):
        super().__init__()
        self.by_call: Counter = Counter()
        self.where: Counter | None = Counter() if where else None  # (call, file:line of eebench) → count

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if (name in READS or _to_host(func, args, kwargs)) and not _HOST_VALUES[0] and not _in_optimizer():
            self.by_call[name] += 1
            if self.where is not None:
                self.where[(name, _caller())] += 1
        return func(*args, **kwargs)

    @property
    def count(self) -> int:
        return sum(self.by_call.values())


class DeviceSyncs:
    """The CUDA counterpart of `HostReads`: ``torch.cuda.set_sync_debug_mode("warn")`` makes every call that
    synchronises the host with the GPU warn (the reads above, and also what only a GPU waits for: a
    boolean-mask index, ``nonzero``, a pageable copy); the block's warnings are counted in ``where``
    (message, file:line) and ``count``. CUDA only."""

    def __enter__(self) -> "DeviceSyncs":
        self._mode = torch.cuda.get_sync_debug_mode()
        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.set_sync_debug_mode(self._mode)
        self._catch.__exit__(*exc)
        self.where = Counter((str(w.message).splitlines()[0][:60], f"{w.filename.split('site-packages/')[-1]}:{w.lineno}")
                             for w in self._seen if "synchroniz" in str(w.message))

    @property
    def count(self) -> int:
        return sum(self.where.values())
