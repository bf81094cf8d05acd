"""One device rule for every command that runs a model (finetune, evaluate, calibrate when it must
trace, speed, the benchmarks): the accelerator when there is one, else the CPU; ``--device`` (cpu,
cuda, cuda:N, mps) chooses. The device actually used is recorded in the run's records.

Also the clock every timing goes through: it synchronises the device before reading it, and on a
CUDA device measures with CUDA events, so queued GPU work is charged to the side that queued it."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from eebench.errors import UserError


def default_device() -> torch.device:
    """The accelerator when there is one (CUDA, then Apple's MPS), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str | None = None) -> torch.device:
    """``--device``: None (the rule above), ``cpu``, ``cuda`` / ``cuda:N``, ``mps``. A device this
    machine does not have is one UserError naming what it has."""
    if name is None or name == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name}: not a device name; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {name}: this machine has no usable CUDA device (torch {torch.__version__}, "
                            f"CUDA build: {torch.version.cuda or 'no'}); use --device cpu")
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= count:
            raise UserError(f"--device {name}: only {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1}); "
                            f"check CUDA_VISIBLE_DEVICES")
        return torch.device("cuda", index)
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserError(f"--device {name}: MPS is not available here; use --device cpu")
        return device
    if device.type in ("cpu", "meta"):  # meta: shape and device plumbing in tests
        return device
    raise UserError(f"--device {name}: eebench runs on cpu, cuda, cuda:N or mps")


def describe(device: torch.device) -> dict:
    """What the run's records say about the device: its name and, on CUDA, the GPU's model."""
    device = torch.device(device)
    record = {"device": str(device)}
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        record["device"] = f"cuda:{index}"
        record["device_name"] = torch.cuda.get_device_name(index)
    elif device.type == "cpu":
        import platform

        record["device_name"] = platform.processor() or platform.machine()
    return record


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Clock:
    """Elapsed seconds of a block of device work. On CUDA: CUDA events recorded around the block on the
    current stream *of the clock's device* (cuda:1's own stream for a model on cuda:1, whatever the current
    device is: events on another device's stream would time only the kernel launches), read after a
    synchronise; elsewhere: perf_counter after synchronising."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    @contextmanager
    def time(self) -> Iterator[list[float]]:
        """``with clock.time() as t: ...`` then ``t[0]`` is the block's seconds."""
        out = [0.0]
        if self.cuda:
            stream = torch.cuda.current_stream(self.device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            start.record(stream)
            yield out
            end.record(stream)
            end.synchronize()
            out[0] = start.elapsed_time(end) / 1000.0
            return
        synchronize(self.device)
        t0 = time.perf_counter()
        yield out
        synchronize(self.device)
        out[0] = time.perf_counter() - t0

    def seconds(self, fn, *args) -> float:
        with self.time() as t:
            fn(*args)
        return t[0]


def enable_tf32(on: bool) -> None:
    """TF32 matmuls and convolutions for fp32 work on Ampere and newer GPUs (no effect on the CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


@dataclass(frozen=True)
class Precision:
    """How a command computes on its device: the autocast dtype (None: the weights' own fp32) and whether
    fp32 matmuls may use TF32. Stored in every trace and speed record (``label`` and ``tf32``)."""

    dtype: torch.dtype | None
    tf32: bool

    @property
    def label(self) -> str:
        return str(self.dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace("float16", "fp16") \
            if self.dtype is not None else "fp32"

    @property
    def agreement_floor(self) -> float:
        """The share of examples whose exit must equal the trace's (AGREEMENT_FLOOR)."""
        return AGREEMENT_FLOOR[self.label if self.label != "fp32" or not self.tf32 else "tf32"]


AGREEMENT_FLOOR = {"fp32": 1.0, "tf32": 0.995, "bf16": 0.98, "fp16": 0.99}
"""Engine against trace: the least share of examples whose exit layer must agree. The engine runs an
example alone (or in a batch of like lengths) and the trace in batches of eval_batch_size, so their
kernels sum in different orders; in fp32 that moves a signal by ~1e-6 and no exit changes (checked
exactly on the CPU), but an example whose confidence sits within rounding of the threshold may exit one
layer apart in reduced precision: TF32 keeps 10 mantissa bits (~1e-3), fp16 10 bits with a narrow
range, bf16 8 bits (~4e-3). The floors allow that many near-threshold examples and no more; below it
the engine and the simulation disagree for a reason other than rounding."""


def apply_precision(device: torch.device, train) -> Precision:
    """The recipe's precision (``train.mixed_precision``, ``train.tf32``) on ``device``, for every command
    that runs the model (finetune, trace, calibrate, evaluate, speed): switches TF32 on or off (CUDA only;
    it also applies to the fp32 work outside a bf16 / fp16 autocast) and gives the autocast dtype."""
    tf32 = bool(train.tf32) and torch.device(device).type == "cuda"
    enable_tf32(tf32)
    return Precision(inference_dtype(device, train.mixed_precision), tf32)


def inference_dtype(device: torch.device, mixed_precision: str | None) -> torch.dtype | None:
    """The autocast dtype a trace or the engine runs in: the recipe's training precision on a GPU
    (bf16 / fp16), none on the CPU (CPU autocast is slower than fp32 there for BERT-sized layers)."""
    if torch.device(device).type != "cuda" or mixed_precision in (None, "no"):
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on the device with ``dtype``; a no-op context when dtype is None."""
    import contextlib

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
