"""Tokenize a split once; pad per batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from eebench.data.examples import Examples


@dataclass
class Encoded(Dataset):
    """Token ids per example (unpadded) and labels; ``collate`` pads a batch to its longest row."""

    features: list[dict[str, list[int]]]
    labels: np.ndarray | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[int, dict[str, list[int]]]:
        return i, self.features[i]

    def lengths(self) -> np.ndarray:
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


def encode(tokenizer, examples: Examples, max_length: int, pair_input: str = "concat",
           segments: bool = False) -> Encoded:
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
        return Encoded(features, examples.labels, tokenizer.pad_token_id or 0)
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
    return Encoded(features, examples.labels, tokenizer.pad_token_id or 0)


def train_loader(data: Encoded, batch_size: int, seed: int) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen, collate_fn=data.collate)


def eval_loader(data: Encoded, batch_size: int) -> DataLoader:
    """Batches of similar length (sorted), so padding costs little; ``index`` restores file order."""
    order = np.argsort(data.lengths(), kind="stable").tolist()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return DataLoader(data, batch_sampler=batches, collate_fn=data.collate)
