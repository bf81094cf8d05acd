"""Trains a tiny model a few steps with every strategy through eebench's training loop and saves the
weights: run once as `python dist_worker.py OUT` (one process, global batch 8) and once under
`torchrun --nproc_per_node 2` (2 processes × 4), then tests/test_distributed.py compares them.

Dropout is off, so two runs that compute the same gradients reach the same weights up to float
rounding. 21 training examples make the last global batch uneven (5 rows: 3 + 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoConfig, AutoModel

from eebench.data.encode import Encoded, eval_loader
from eebench.metrics import layerwise
from eebench.model.multiexit import MultiExitModel, MultiTaskModel
from eebench.recipe import SmartConfig, TrainConfig
from eebench.trace_data import compute_logits
from eebench.train.loop import train
from eebench.train.state import TaskJob
from eebench.train.parallel import Parallel
from eebench.train.strategies import build_stages, needs_lte_head

CONFIG = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
          "max_position_embeddings": 64, "vocab_size": 64, "hidden_dropout_prob": 0.0,
          "attention_probs_dropout_prob": 0.0, "attn_implementation": "eager"}

CASES: dict[str, dict] = {
    "two_stage": {},
    "joint": {"args": {"layer_weights": "pabee"}},
    "alternating": {},
    "self_distill": {},
    "romebert": {},
    "lte": {},
    "csdbert": {"args": {"alpha": 0.5}},
    "slf": {},
    "smart_alternating": {},
    "metabert": {"args": {"support_size": 2, "query_size": 2, "meta_batch": 2, "inner_lr": 0.05}},
    "finetune": {},
    "head_only": {},
    "joint+smart": {"strategy": "joint", "smart": {"enabled": True, "sigma": 1e-3, "eta": 1e-2}},
    "romebert+smart": {"strategy": "romebert", "smart": {"enabled": True}},
    "two_stage+lte": {"strategy": "two_stage", "lte": True},
    "joint+accum": {"strategy": "joint", "grad_accum_steps": 2},
    # the all-reduce after the backward instead of overlapped with it (eebench.train.overlap)
    "joint+no_overlap": {"strategy": "joint", "args": {"layer_weights": "pabee"}, "overlap_grad_reduce": False},
    "joint+regression": {"strategy": "joint", "regression": True},
    "multitask": {"strategy": "slf", "multitask": True},
    # negative control: one process with half the global batch must NOT match two processes × 4
    "joint-half-batch": {"strategy": "joint", "batch_size": 4, "single_only": True},
}


def data(seed: int, n: int, regression: bool = False) -> Encoded:
    rng = np.random.default_rng(seed)
    features = []
    for _ in range(n):
        length = int(rng.integers(4, 12))
        ids = [1] + rng.integers(5, 64, length - 1).tolist()
        features.append({"input_ids": ids, "attention_mask": [1] * length})
    labels = rng.normal(size=n).astype(np.float32) if regression else rng.integers(0, 2, n)
    return Encoded(features, labels, 0)


def run_case(name: str, case: dict, accelerator: Accelerator, out: Path) -> None:
    par = Parallel.from_accelerator(accelerator)
    strategy = case.get("strategy", name)
    if case.get("single_only") and par.active:
        return
    cfg = TrainConfig(strategy=strategy, args=case.get("args", {}), epochs=2, lr=3e-3,
                      batch_size=case.get("batch_size", 8),
                      seed=7, lte=case.get("lte", False), smart=SmartConfig(**case.get("smart", {})),
                      grad_accum_steps=case.get("grad_accum_steps", 1) if par.active else 1, warmup_ratio=0.1,
                      overlap_grad_reduce=case.get("overlap_grad_reduce", True))
    if strategy == "two_stage":
        cfg.args = {**cfg.args, "stage2_epochs": 1}
    if strategy == "slf":
        cfg.args = {**cfg.args, "focus_epochs": 1}
    regression = case.get("regression", False)
    set_seed(0)
    backbone = AutoModel.from_config(AutoConfig.for_model("bert", **CONFIG))
    names = ["a", "b"] if case.get("multitask") else ["a"]
    if case.get("multitask"):
        model = MultiTaskModel(backbone, {t: {"num_labels": 2, "lte": False} for t in names}, dropout=0.0)
        views = {t: model.task(t) for t in names}
    else:
        model = MultiExitModel(backbone, 1 if regression else 2, dropout=0.0, lte=needs_lte_head(cfg))
        views = {"a": model}
    jobs = [TaskJob(t, views[t], build_stages(cfg, "sst2", 3), data(k, 21, regression), regression, cfg.smart)
            for k, t in enumerate(names)]
    dev = data(99, 10, regression)

    def on_epoch_end(stage: str, epoch: int) -> dict:
        metric = "pearson" if regression else "acc"
        out_ = {}
        for t in names:
            logits = compute_logits(views[t], eval_loader(dev, 4), accelerator.device, par)
            out_[t] = {"dev_metric": metric,
                       "dev_layerwise": [r[metric] for r in layerwise((metric,), logits, dev.labels, regression)]}
        return {"tasks": out_} if len(names) > 1 else out_["a"]

    init = {k: v.clone() for k, v in model.state_dict().items()}
    history = train(model, jobs, cfg, accelerator, out / f"{name}_log_w{par.world}.jsonl", on_epoch_end)
    if par.is_main:
        overlapped = sorted(stage for job in jobs for stage, how in job.overlaps.items() if how)
        torch.save({"state": model.state_dict(), "init": init, "history": history, "overlapped": overlapped},
                   out / f"{name}_w{par.world}.pt")


def main() -> None:
    out = Path(sys.argv[1])
    only = sys.argv[2:] or list(CASES)
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    out.mkdir(parents=True, exist_ok=True)
    for name in only:
        run_case(name, CASES[name], accelerator, out)
        accelerator._custom_objects.clear()  # one TrainState per case


if __name__ == "__main__":
    main()
