"""The training step's pieces on one process: the fp16 loss scaler (unscaled gradients equal the
fp32 ones for every kind of step), global-batch accounting, the batch plan's order."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils.data import DataLoader

from eebench.recipe import SmartConfig, TrainConfig
from eebench.train.state import BatchPlan
from eebench.train.loop import global_batch_size
from eebench.train.state import TaskJob
from eebench.train.step import StepInputs, run_step
from eebench.train.parallel import Parallel
from eebench.train.strategies import StepContext, build_stages

from dist_worker import CONFIG, data


class _Accelerator:
    """What ``run_step`` reads of an Accelerator: a CPU device, no autocast, and an optional scaler."""

    device = torch.device("cpu")

    def __init__(self, scaler=None):
        self.scaler = scaler

    def autocast(self):
        return contextlib.nullcontext()


def _grads(strategy: str, args: dict, scaler, smart: bool = False) -> list[torch.Tensor]:
    from accelerate.utils import set_seed
    from transformers import AutoConfig, AutoModel

    from eebench.model.multiexit import MultiExitModel

    set_seed(0)
    model = MultiExitModel(AutoModel.from_config(AutoConfig.for_model("bert", **CONFIG)), 2, dropout=0.0)
    cfg = TrainConfig(strategy=strategy, args=args)
    stage = build_stages(cfg, "sst2", 3)[0]
    params = stage.trains(model)
    job = TaskJob("a", model, [stage], data(0, 8), False, SmartConfig(enabled=smart))
    ctx = StepContext(False, 0, 1, parallel=Parallel())
    inputs = StepInputs(job.data, [list(range(8))], Parallel(), 1, stage.gradient is not None, smart)[0]
    run_step(job, stage, inputs, ctx, params, True, _Accelerator(scaler))
    if scaler is not None:
        optimizer = torch.optim.SGD(params, lr=0.1)
        scaler.unscale_(optimizer)
    return [p.grad.clone() for p in params if p.grad is not None]


@pytest.mark.parametrize("strategy,args,smart", [
    ("joint", {}, False), ("romebert", {}, False), ("joint", {}, True),
    ("metabert", {"support_size": 2, "query_size": 2, "meta_batch": 2}, False),
])
def test_fp16_loss_scaling_unscales_to_the_fp32_gradients(strategy, args, smart):
    plain = _grads(strategy, args, None, smart)
    scaled = _grads(strategy, args, torch.amp.GradScaler("cpu", init_scale=2.0 ** 12), smart)
    assert len(plain) == len(scaled)
    for a, b in zip(plain, scaled):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_global_batch_is_the_recipe_batch_unless_per_device_is_given():
    assert global_batch_size(TrainConfig(batch_size=32), 4) == 32
    cfg = TrainConfig(per_device_batch_size=8, grad_accum_steps=2)
    assert global_batch_size(cfg, 4) == 64


def test_shares_cover_the_global_batch_in_order():
    rows = list(range(11))
    shares = [Parallel(r, 3).share(rows) for r in range(3)]
    assert [len(s) for s in shares] == [4, 4, 3] and sum(map(list, shares), []) == rows


def test_batch_plan_replays_a_shuffling_dataloader():
    gen = torch.Generator().manual_seed(5)
    loader = DataLoader(list(range(23)), batch_size=5, shuffle=True, generator=gen)
    expected = [[b.tolist() for b in loader] for _ in range(3)]
    plan = BatchPlan(23, 5, 5)
    assert [plan.next_epoch() for _ in range(3)] == expected


def test_the_launchers_mixed_precision_is_honoured_and_trackers_log(tmp_path):
    """`accelerate launch --mixed_precision bf16` reaches the process as ACCELERATE_MIXED_PRECISION;
    a recipe that does not set train.mixed_precision follows it. TensorBoard gets the step losses and
    every exit's per-epoch dev metric."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT, quickstart_overrides

    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install tensorboard)")
    sets = [x for o in quickstart_overrides(tmp_path, "bf16") + ["train.eval_each_epoch=true",
                                                                 'output.trackers=["tensorboard"]']
            for x in ("--set", o)]
    env = {**os.environ, "ACCELERATE_MIXED_PRECISION": "bf16", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "eebench.cli", "finetune", str(ROOT / "recipes/quickstart.toml"),
                             *sets], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    status = json.loads((tmp_path / "bf16/status.json").read_text())
    assert status["mixed_precision"] == "bf16"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((tmp_path / "bf16/tracking").rglob("events.out.tfevents.*"))
    assert events
    tags = set()
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert "train/loss" in tags and "dev/acc_exit1" in tags and "dev/acc_exit6" in tags
