"""Training step time with the gradient all-reduce overlapped with the backward (eebench.train.overlap)
against one all-reduce after the backward, side by side in one run of several processes.

    python benchmarks/grad_overlap.py [--procs 2] [--steps 20] [--rounds 3] [--batch 32] [--length 64]
                                      [--layers 6] [--hidden 384]

Starts itself under torch's distributed launcher (gloo on the CPU, NCCL on GPUs, one process per GPU
when there are GPUs). Each round trains the same random BERT (MiniLM-L6's shape by default) for
``--steps`` steps of the joint loss through eebench's own training loop, once with
``train.overlap_grad_reduce = true`` and once false, alternating which goes first; the rounds' examples/s
come from the loop's epoch summary. On a CPU the all-reduce competes with the backward for the same
cores (measured 0.90x on 2 cores, which is why `overlap_grad_reduce` is on by default on GPUs only); the
overlap pays where a GPU computes while NCCL reduces.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def launch(argv: list[str], procs: int) -> int:
    env = {**os.environ, "EEBENCH_OVERLAP_WORKER": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", __file__, *argv]
    return subprocess.run(cmd, env=env).returncode


def epoch(args, overlap: bool, accelerator, out: Path) -> float:
    """examples/s of one epoch of ``args.steps`` global batches, overlap on or off."""
    import numpy as np
    from transformers import AutoConfig, AutoModel

    from eebench.data.encode import Encoded
    from eebench.model.multiexit import MultiExitModel
    from eebench.recipe import TrainConfig
    from eebench.train.loop import train
    from eebench.train.state import TaskJob
    from eebench.train.strategies import build_stages

    import torch

    torch.manual_seed(0)
    config = AutoConfig.for_model("bert", hidden_size=args.hidden, num_hidden_layers=args.layers,
                                  num_attention_heads=max(1, args.hidden // 32), intermediate_size=4 * args.hidden)
    model = MultiExitModel(AutoModel.from_config(config), 2)
    rng = np.random.default_rng(0)
    n = args.steps * args.batch
    rows = [{"input_ids": rng.integers(5, 20000, args.length).tolist(), "attention_mask": [1] * args.length}
            for _ in range(n)]
    data = Encoded(rows, rng.integers(0, 2, n), 0)
    cfg = TrainConfig(strategy="joint", epochs=1, batch_size=args.batch, overlap_grad_reduce=overlap,
                      eval_each_epoch=False)
    job = TaskJob("sst2", model, build_stages(cfg, "sst2", args.layers), data, False, cfg.smart)
    history = train(model, [job], cfg, accelerator, out / f"log_{overlap}.jsonl")
    accelerator._custom_objects.clear()
    return history[-1]["examples_per_s"]


def worker(args) -> int:
    from accelerate import Accelerator

    from eebench.console import console

    accelerator = Accelerator(cpu=not __import__("torch").cuda.is_available())
    console.quiet = True  # the results below are the output
    on, off = [], []
    with tempfile.TemporaryDirectory() as tmp:
        epoch(args, True, accelerator, Path(tmp))  # warm-up
        for r in range(args.rounds):
            for overlap in ((True, False) if r % 2 == 0 else (False, True)):
                (on if overlap else off).append(epoch(args, overlap, accelerator, Path(tmp)))
            if accelerator.process_index == 0:
                print(f"round {r + 1}: overlapped {on[-1]:.1f} ex/s, after the backward {off[-1]:.1f} ex/s, "
                      f"ratio {on[-1] / off[-1]:.3f}", flush=True)
    if accelerator.process_index == 0:
        ratios = [a / b for a, b in zip(on, off)]
        print(f"{accelerator.num_processes} processes on {accelerator.device}, BERT {args.layers}L hidden "
              f"{args.hidden}, global batch {args.batch} x {args.length} tokens, {args.steps} steps: overlapped / "
              f"after = {statistics.median(ratios):.3f} (median of {args.rounds}; min {min(ratios):.3f}, "
              f"max {max(ratios):.3f})", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, default=None, help="processes (default: the GPUs, else 2)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if os.environ.get("EEBENCH_OVERLAP_WORKER"):
        return worker(args)
    import torch

    procs = args.procs or (torch.cuda.device_count() if torch.cuda.is_available() else 2)
    return launch(argv, procs)


if __name__ == "__main__":
    sys.exit(main())
