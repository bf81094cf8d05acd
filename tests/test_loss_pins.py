"""The first logged losses of every strategy, pinned (as torchtune's recipe tests pin theirs): a tiny
fixed BERT, fixed batches, every stage of the strategy for three optimizer steps each; rtol 1e-4.
A change to any loss, gradient rule, step kind or optimizer wiring moves a pin. Regenerate the
pins only for an intended change: EEBENCH_UPDATE_PINS=1 python -m pytest tests/test_loss_pins.py."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
import torch

from eebench.recipe import SmartConfig, TrainConfig
from eebench.train.parallel import Parallel
from eebench.train.state import TaskJob
from eebench.train.step import StepInputs, run_step
from eebench.train.strategies import STRATEGIES, StepContext, build_stages

from dist_worker import CASES, CONFIG, data

PINS = Path(__file__).parent / "fixtures" / "golden" / "strategy_losses.json"
STEPS = 3
NAMES = [name for name in CASES if name in STRATEGIES] + ["joint+smart", "two_stage+lte", "joint+regression"]


class _Accelerator:
    device = torch.device("cpu")
    scaler = None

    def autocast(self):
        return contextlib.nullcontext()


def _losses(name: str) -> list[float]:
    from accelerate.utils import set_seed
    from transformers import AutoConfig, AutoModel

    from eebench.model.multiexit import MultiExitModel

    case = CASES[name]
    regression = case.get("regression", False)
    train = TrainConfig(strategy=case.get("strategy", name), args=case.get("args", {}), lte=case.get("lte", False),
                        smart=SmartConfig(**case.get("smart", {})))
    set_seed(0)
    model = MultiExitModel(AutoModel.from_config(AutoConfig.for_model("bert", **CONFIG)), 1 if regression else 2,
                           dropout=0.0, lte=train.lte or STRATEGIES[train.strategy].lte_head)
    stages = build_stages(train, "sst2", 3)
    job = TaskJob(name, model, stages, data(0, 16, regression), regression, train.smart)
    out = []
    for s, stage in enumerate(stages):
        params = stage.trains(model)
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        for step in range(STEPS):
            rows = [list(range(8 * (step % 2), 8 * (step % 2) + 8))]
            inputs = StepInputs(job.data, rows, Parallel(), 1, stage.gradient is not None, train.smart.enabled)[0]
            ctx = StepContext(regression, step, 1, job.history, job.pair_loss, Parallel(), 42, s, epoch_step=step)
            parts = run_step(job, stage, inputs, ctx, params, True, _Accelerator())
            if any(p.grad is not None for p in params):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            out.append(float(parts["loss"]))
    return out


@pytest.fixture(scope="module")
def pins() -> dict:
    return json.loads(PINS.read_text()) if PINS.is_file() else {}


@pytest.mark.parametrize("name", NAMES)
def test_first_losses_are_pinned(name, pins):
    got = _losses(name)
    if os.environ.get("EEBENCH_UPDATE_PINS"):
        current = json.loads(PINS.read_text()) if PINS.is_file() else {}
        PINS.write_text(json.dumps({**current, name: got}, indent=1, sort_keys=True) + "\n")
        pytest.skip("pins updated")
    assert name in pins, f"no pin for {name}: EEBENCH_UPDATE_PINS=1 python -m pytest {__file__}"
    assert got == pytest.approx(pins[name], rel=1e-4), name
    assert len(set(round(x, 6) for x in got)) > 1  # the steps changed the model: the losses move
