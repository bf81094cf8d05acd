"""The one in-memory form of a split: ids, texts and labels (None for unlabelled test splits)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass
class Examples:
    ids: list[str]
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray | None  # Shape: [N]; int64 class ids or float32 regression targets
    source: str = ""
    """Where the examples were read: a file's absolute path, ``hub:<dataset>:<split>`` or ``synthetic``."""

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> "Examples":
        pick = lambda xs: [xs[i] for i in index]  # noqa: E731
        return Examples(
            ids=pick(self.ids),
            text_a=pick(self.text_a),
            text_b=pick(self.text_b) if self.text_b is not None else None,
            labels=self.labels[index] if self.labels is not None else None,
            source=self.source,
        )

    def fingerprint(self) -> str:
        """sha256 over ids, texts and labels: any change to the examples changes it."""
        h = hashlib.sha256()
        for i in range(len(self)):
            h.update(self.ids[i].encode())
            h.update(b"\x1f" + self.text_a[i].encode())
            if self.text_b is not None:
                h.update(b"\x1f" + self.text_b[i].encode())
            h.update(b"\x1e")
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()


def random_subset(examples: Examples, n: int | None, seed: int) -> Examples:
    """``n`` examples drawn without replacement, kept in file order; all of them when n is None."""
    if n is None or n >= len(examples):
        return examples
    rng = np.random.default_rng(seed)
    return examples.subset(np.sort(rng.choice(len(examples), size=n, replace=False)))
