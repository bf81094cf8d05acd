"""The trace: one batched pass over a split with all exits, stored per example and per layer.

A trace is keyed by the model's weights, the split's examples and the tokenization settings; a
stored trace whose key differs is never reused (it is recomputed, and the user is told)."""

from __future__ import annotations

import contextlib
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eebench.device import autocast
from eebench.errors import UserError
from eebench.io import atomic_write

TRACE_VERSION = 2  # 2: CKA similarities stored


@dataclass
class Trace:
    split: str
    key: str
    ids: np.ndarray  # Shape: [N]; example ids (str)
    logits: np.ndarray  # Shape: [N, L, C]; float32
    labels: np.ndarray | None  # Shape: [N]; None for unlabelled splits
    regression: bool
    lte: np.ndarray | None = None  # Shape: [N, L]; learned-to-exit certainty, when the model has an LTE head
    cka: np.ndarray | None = None  # Shape: [N, L-1]; linear CKA of layers i and i+1 (token representations)
    tokens: np.ndarray | None = None  # Shape: [N]; tokens per example (for MACs)
    device: str | None = None  # where it was computed ("cuda:0 NVIDIA H200", "cpu x86_64"; None: older traces)
    precision: str | None = None  # autocast dtype of the pass: "fp32", "bf16", "fp16" (None: older traces)
    tf32: bool | None = None  # whether fp32 matmuls could use TF32 (CUDA only; None: older traces)

    @property
    def num_layers(self) -> int:
        return self.logits.shape[1]


def trace_key(weights_sha256: str, examples_fingerprint: str, max_length: int, input_mode: str = "") -> str:
    text = f"v{TRACE_VERSION}|{weights_sha256}|{examples_fingerprint}|{max_length}"
    if input_mode:
        text += f"|{input_mode}"
    return hashlib.sha256(text.encode()).hexdigest()


@torch.no_grad()
def compute_signals(model, loader, device: torch.device, progress=None, task_id=None,
                    with_cka: bool = True, parallel=None, dtype: torch.dtype | None = None) -> dict[str, np.ndarray]:
    """Every exit's logits (Shape: [N, L, C]), LTE certainty ([N, L]) when the model has an LTE head,
    and CKA of consecutive layers ([N, L-1]), in the dataset's order.

    With ``parallel`` (eebench.train.parallel.Parallel) each process runs every world-th batch and the
    rows are gathered by example index on every process: each example is computed once, in the same
    batch as a single process would put it in, so the result equals a single-process trace.
    ``dtype``: autocast dtype of the forward pass (the recipe's precision on a GPU); the signals are
    stored fp32 whatever it is."""
    model.eval()
    n = len(loader.dataset)
    names = ["logits"] + (["lte"] if model.lte is not None else []) + (["cka"] if with_cka else [])
    widths = {"logits": (model.num_layers, model.num_labels), "lte": (model.num_layers,),
              "cka": (model.num_layers - 1,)}
    out_arrays = {name: np.zeros((n, *widths[name]), dtype=np.float32) for name in names}
    if parallel is not None and parallel.active:
        from torch.utils.data import DataLoader

        mine = list(loader.batch_sampler)[parallel.rank:: parallel.world]
        loader = DataLoader(loader.dataset, batch_sampler=mine, collate_fn=loader.collate_fn)
    rows: list[np.ndarray] = []
    for batch in loader:
        index = batch.pop("index").numpy()
        batch.pop("labels", None)
        with autocast(device, dtype):
            out = model(**{k: v.to(device, non_blocking=True) for k, v in batch.items()}, with_cka=with_cka)
        for name in names:
            out_arrays[name][index] = getattr(out, name).float().cpu().numpy()
        rows.append(index)
        if progress is not None:
            progress.advance(task_id, len(index))
    if parallel is not None and parallel.active:
        index = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        for part in parallel.all_objects((index, {name: out_arrays[name][index] for name in names})):
            for name in names:
                out_arrays[name][part[0]] = part[1][name]
        if progress is not None:
            progress.update(task_id, completed=n)
    return {"logits": out_arrays["logits"], "lte": out_arrays.get("lte"), "cka": out_arrays.get("cka")}


def compute_logits(model, loader, device: torch.device, parallel=None, dtype: torch.dtype | None = None) -> np.ndarray:
    return compute_signals(model, loader, device, with_cka=False, parallel=parallel, dtype=dtype)["logits"]


def save_trace(path: Path, trace: Trace) -> None:
    arrays = {"key": np.array(trace.key), "split": np.array(trace.split), "ids": trace.ids,
              "logits": trace.logits, "regression": np.array(trace.regression)}
    if trace.labels is not None:
        arrays["labels"] = trace.labels
    for name in ("lte", "cka", "tokens", "device", "precision", "tf32"):
        if getattr(trace, name) is not None:
            arrays[name] = np.asarray(getattr(trace, name))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def load_trace(path: Path) -> Trace:
    with _open(path) as z:
        return Trace(
            split=str(z["split"]),
            key=str(z["key"]),
            ids=z["ids"],
            logits=z["logits"],
            labels=z["labels"] if "labels" in z.files else None,
            regression=bool(z["regression"]),
            lte=z["lte"] if "lte" in z.files else None,
            cka=z["cka"] if "cka" in z.files else None,
            tokens=z["tokens"] if "tokens" in z.files else None,
            device=str(z["device"]) if "device" in z.files else None,
            precision=str(z["precision"]) if "precision" in z.files else None,
            tf32=bool(z["tf32"]) if "tf32" in z.files else None,
        )


def stored_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    with _open(path) as z:
        return str(z["key"])


@contextlib.contextmanager
def _open(path: Path):
    """The npz archive; a truncated or corrupt file is one user error naming the command that redoes it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            yield z  # members load lazily: read them inside this block
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise UserError(f"{path} is unreadable (truncated or corrupt: {str(err) or type(err).__name__}); "
                        f"recompute it with eebench evaluate {path.parent.parent} --split {path.stem} --retrace") from None

