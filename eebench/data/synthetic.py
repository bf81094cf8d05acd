"""The embedded default task: generated sentiment sentences with easy and hard examples.

Each sentence mixes filler words with sentiment words; ``not`` flips the word after it. The label is
the sign of the summed (flipped) polarities. Easy examples (half of them) carry 3-4 words of one
polarity and no negation: bag-of-words evidence that early layers can read. Hard examples have a net
margin of one and negations, which need attention across tokens: deeper layers. So early exits are
confident on easy examples and unsure on hard ones, as on real data. Nothing is downloaded: the
vocabulary and a WordPiece tokenizer over it are built here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eebench.data.examples import Examples
from eebench.recipe import SyntheticConfig

POSITIVE = ["good", "great", "fine", "nice", "superb", "lovely", "brilliant", "fun", "moving", "clever"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "weak", "terrible", "ugly", "flat", "silly"]
FILLER = ["the", "a", "movie", "film", "plot", "actor", "scene", "story", "was", "is", "and", "with",
          "it", "this", "that", "of", "in", "cast", "music", "ending", "script", "director", "very",
          "quite", "so", "rather", "really", "overall", "but", "also"]
NEGATOR = "not"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + POSITIVE + NEGATIVE + FILLER + [NEGATOR]
_SPLIT_OFFSET = {"train": 0, "dev": 1, "test": 2}


def generate(cfg: SyntheticConfig, split: str) -> Examples:
    n = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test}[split]
    rng = np.random.default_rng([cfg.seed, _SPLIT_OFFSET[split]])
    texts, labels = [], []
    for i in range(n):
        words, label = _sentence(rng, hard=bool(i % 2))
        texts.append(" ".join(words))
        labels.append(label)
    return Examples([str(i) for i in range(n)], texts, None, np.asarray(labels, dtype=np.int64))


def _sentence(rng: np.random.Generator, hard: bool) -> tuple[list[str], int]:
    label = int(rng.integers(2))
    sign = 1 if label == 1 else -1
    if hard:
        k = int(rng.choice([3, 5]))
        polarities = [sign] * ((k + 1) // 2) + [-sign] * (k // 2)  # net margin one
    else:
        polarities = [sign] * int(rng.integers(3, 5))
    rng.shuffle(polarities)
    phrases = []
    for p in polarities:
        negate = hard and rng.random() < 0.5
        shown = -p if negate else p  # the word's own polarity; `not` flips it back to p
        word = str(rng.choice(POSITIVE if shown > 0 else NEGATIVE))
        phrases.append([NEGATOR, word] if negate else [word])
    filler = list(rng.choice(FILLER, size=int(rng.integers(6, 13))))
    words: list[str] = []
    slots = sorted(rng.choice(len(filler) + 1, size=len(phrases), replace=True))
    for pos in range(len(filler) + 1):
        for _ in range(slots.count(pos)):
            words.extend(phrases.pop())
        if pos < len(filler):
            words.append(str(filler[pos]))
    return words, label


def build_tokenizer(folder: Path):
    """A BERT WordPiece tokenizer over the synthetic vocabulary, saved in ``folder``."""
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)}, do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    return tokenizer
