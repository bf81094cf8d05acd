"""The trace: one batched pass over a split with all exits, stored per example and per layer.

A trace is keyed by the model's weights, the split's examples and the tokenization settings; a
stored trace whose key differs is never reused (it is recomputed, and the user is told)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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
                    with_cka: bool = True) -> dict[str, np.ndarray]:
    """Every exit's logits (Shape: [N, L, C]), LTE certainty ([N, L]) when the model has an LTE head,
    and CKA of consecutive layers ([N, L-1]), in the dataset's order."""
    model.eval()
    n = len(loader.dataset)
    logits = np.zeros((n, model.num_layers, model.num_labels), dtype=np.float32)
    lte = np.zeros((n, model.num_layers), dtype=np.float32) if model.lte is not None else None
    cka = np.zeros((n, model.num_layers - 1), dtype=np.float32) if with_cka else None
    for batch in loader:
        index = batch.pop("index").numpy()
        batch.pop("labels", None)
        out = model(**{k: v.to(device) for k, v in batch.items()}, with_cka=with_cka)
        logits[index] = out.logits.float().cpu().numpy()
        if lte is not None:
            lte[index] = out.lte.float().cpu().numpy()
        if cka is not None:
            cka[index] = out.cka.float().cpu().numpy()
        if progress is not None:
            progress.advance(task_id, len(index))
    return {"logits": logits, "lte": lte, "cka": cka}


def compute_logits(model, loader, device: torch.device) -> np.ndarray:
    return compute_signals(model, loader, device, with_cka=False)["logits"]


def save_trace(path: Path, trace: Trace) -> None:
    arrays = {"key": np.array(trace.key), "split": np.array(trace.split), "ids": trace.ids,
              "logits": trace.logits, "regression": np.array(trace.regression)}
    if trace.labels is not None:
        arrays["labels"] = trace.labels
    for name in ("lte", "cka", "tokens"):
        if getattr(trace, name) is not None:
            arrays[name] = getattr(trace, name)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def load_trace(path: Path) -> Trace:
    with np.load(path, allow_pickle=False) as z:
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
        )


def stored_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return str(z["key"])
