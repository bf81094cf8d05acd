"""Tokenize a split once; pad per batch.

Tokenized splits live in memory-mapped Arrow files (the ``datasets`` library's format) under the
eebench cache (``EEBENCH_CACHE``, default ``~/.cache/eebench``), keyed by the tokenizer, the
examples and the tokenization settings: resident memory stays small however large the split, and
a second run on the same data does not tokenize again."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from eebench.data.examples import Examples
from eebench.io import atomic_write


@dataclass
class Encoded(Dataset):
    """Token ids per example (unpadded) and labels; ``collate`` pads a batch to its longest row."""

    features: Sequence[dict[str, list[int]]]
    """A list of rows, or ArrowRows (memory-mapped)."""
    labels: np.ndarray | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[int, dict[str, list[int]]]:
        return i, self.features[i]

    def __getitems__(self, index: list[int]) -> list[tuple[int, dict[str, list[int]]]]:
        """A batch at once (torch's DataLoader uses it): one Arrow read instead of one per row."""
        rows = self.features.take(index) if isinstance(self.features, ArrowRows) else [self.features[i] for i in index]
        return list(zip(index, rows))

    def lengths(self) -> np.ndarray:
        if isinstance(self.features, ArrowRows):
            return self.features.lengths()
        return np.fromiter((len(f["input_ids"]) for f in self.features), dtype=np.int64, count=len(self))


    def collate(self, items: list[tuple[int, dict[str, list[int]]]]) -> dict[str, torch.Tensor]:
        index = [i for i, _ in items]
        width = max(len(f["input_ids"]) for _, f in items)
        batch: dict[str, torch.Tensor] = {}
        for key in items[0][1]:
            pad = self.pad_id if key == "input_ids" else 0
            rows = [f[key] + [pad] * (width - len(f[key])) for _, f in items]
            batch[key] = torch.tensor(rows, dtype=torch.long)  # Shape: [B, T]
        if self.labels is not None:
            labels = self.labels[index]
            batch["labels"] = torch.from_numpy(labels)
        batch["index"] = torch.tensor(index, dtype=torch.long)
        return batch


class ArrowRows(Sequence):
    """Token rows in a memory-mapped Arrow table; a row is read when a batch needs it."""

    def __init__(self, table):
        self.table = table
        self.keys = [c for c in table.column_names if c != "length"]

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i):
        row = self.table[int(i)]
        return {k: row[k] for k in self.keys}

    def take(self, index: list[int]) -> list[dict[str, list[int]]]:
        cols = self.table[list(index)]
        return [{k: cols[k][j] for k in self.keys} for j in range(len(index))]

    def lengths(self) -> np.ndarray:
        return np.asarray(self.table["length"], dtype=np.int64)


def cache_root() -> Path:
    return Path(os.environ.get("EEBENCH_CACHE") or Path.home() / ".cache" / "eebench")


def encode(tokenizer, examples: Examples, max_length: int, pair_input: str = "concat",
           segments: bool = False) -> Encoded:
    """Token ids per example, from the Arrow cache when this tokenizer has tokenized these examples
    with these settings before (else tokenized now, in chunks, and cached)."""
    from datasets import Dataset

    if not len(examples):
        return Encoded([], examples.labels, tokenizer.pad_token_id or 0)
    key = _cache_key(tokenizer, examples, max_length, pair_input, segments)
    path = cache_root() / "tokenized" / f"{key}.arrow"
    if not path.is_file():
        _write_arrow(path, tokenizer, examples, max_length, pair_input, segments)
    return Encoded(ArrowRows(Dataset.from_file(str(path))), examples.labels, tokenizer.pad_token_id or 0)


def _write_arrow(path: Path, tokenizer, examples: Examples, max_length: int, pair_input: str, segments: bool,
                 chunk: int = 4096) -> None:
    """Tokenize in chunks straight into an Arrow stream file (datasets' cache format), renamed into
    place when complete: a concurrent or killed writer never leaves a half file under the key."""
    import pyarrow as pa

    def write(tmp: Path) -> None:
        writer = None
        with pa.OSFile(str(tmp), "wb") as sink:
            for start in range(0, len(examples), chunk):
                part = examples.subset(np.arange(start, min(start + chunk, len(examples))))
                rows = _encode_rows(tokenizer, part, max_length, pair_input, segments)
                columns = {k: pa.array([r[k] for r in rows], type=pa.list_(pa.int32())) for k in rows[0]}
                columns["length"] = pa.array([len(r["input_ids"]) for r in rows], type=pa.int32())
                batch = pa.RecordBatch.from_pydict(columns)
                if writer is None:
                    writer = pa.ipc.new_stream(sink, batch.schema)
                writer.write_batch(batch)
            writer.close()

    atomic_write(path, write)


def _cache_key(tokenizer, examples: Examples, max_length: int, pair_input: str, segments: bool) -> str:
    import json

    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the tokenizer's definition, without the truncation / padding state calls leave
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        h.update(json.dumps(spec, sort_keys=True).encode())
    else:
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(f"|{type(tokenizer).__name__}|{examples.fingerprint()}|{max_length}|{pair_input}|{segments}|v1".encode())
    return h.hexdigest()[:32]


def encode_in_memory(tokenizer, examples: Examples, max_length: int, pair_input: str = "concat",
                     segments: bool = False) -> Encoded:
    """Token ids per example as Python lists (no cache): for small, throw-away inputs."""
    return Encoded(_encode_rows(tokenizer, examples, max_length, pair_input, segments), examples.labels,
                   tokenizer.pad_token_id or 0)


def _encode_rows(tokenizer, examples: Examples, max_length: int, pair_input: str = "concat",
                 segments: bool = False) -> list[dict[str, list[int]]]:
    """Token ids per example. Sentence pairs are fed as BERT does (``concat``: [CLS] a [SEP] b [SEP],
    segment ids 0/1, one position sequence) or, with ``embed_then_concat`` (BERTer §3.4), as each
    sentence embedded on its own and the embeddings concatenated: [CLS] a [SEP] [CLS] b [SEP] with
    positions restarting at b and segment id 0 throughout (each half up to max_length // 2 tokens).
    ``segments`` adds ``segment_ids`` (0 for a, 1 for b), which the cosine pair loss pools by."""
    if examples.text_b is not None and pair_input == "embed_then_concat":
        half = max(2, max_length // 2)
        enc_a = tokenizer(examples.text_a, truncation=True, max_length=half)["input_ids"]
        enc_b = tokenizer(examples.text_b, truncation=True, max_length=half)["input_ids"]
        features = []
        for a, b in zip(enc_a, enc_b):
            f = {"input_ids": a + b, "attention_mask": [1] * (len(a) + len(b)),
                 "token_type_ids": [0] * (len(a) + len(b)),
                 "position_ids": list(range(len(a))) + list(range(len(b)))}
            if segments:
                f["segment_ids"] = [0] * len(a) + [1] * len(b)
            features.append(f)
        return features
    enc = tokenizer(
        examples.text_a,
        examples.text_b,
        truncation=True,
        max_length=max_length,
        return_attention_mask=True,
        **({"return_token_type_ids": True} if segments else {}),
    )
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(examples))]
    if segments:
        if examples.text_b is None:
            raise ValueError("segment ids need sentence pairs")
        for f in features:
            f["segment_ids"] = list(f["token_type_ids"])
    return features


def eval_loader(data: Encoded, batch_size: int, device: torch.device | None = None) -> DataLoader:
    """Batches of similar length (sorted), so padding costs little; ``index`` restores file order.
    Bound for a GPU: pinned memory (the copy overlaps the previous batch's work)."""
    order = np.argsort(data.lengths(), kind="stable").tolist()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    pin = device is not None and torch.device(device).type == "cuda"
    return DataLoader(data, batch_sampler=batches, collate_fn=data.collate, pin_memory=pin)
