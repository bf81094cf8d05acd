"""No training step reads a device value on the host (issue: host round trips): every strategy's step,
SMART included, runs under a counter of `.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `bool(tensor)`,
`float(tensor)`; the logging step is the only place the loop reads (eebench.train.loop._log_step)."""

import json

import pytest
import torch

import eebench.pipeline.finetune as ft
from eebench.train.host_reads import HostReads
from eebench.train.loop import counted_steps

from conftest import quickstart_overrides

QUICKSTART = "recipes/quickstart.toml"

ALLOWANCE = 0  # reads per training step, forward, backward and optimizer step together

STRATEGIES = {
    "two_stage": ["train.args={stage2_epochs=1}"],
    "joint": ["train.args={}"],
    "self_distill": ["train.args={stage2_epochs=1}"],
    "romebert": ["train.args={}"],
    "csdbert": ["train.args={}"],
    "lte": ["train.args={}"],
    "metabert": ["train.args={meta_epochs=1, support_size=8, query_size=8, meta_batch=2}"],
    "slf": ["train.args={}"],
    "alternating": ["train.args={}"],
    "head_only": ["train.args={}"],
    "finetune": ["train.args={}"],
    "joint+smart": ["train.args={}", "train.smart.enabled=true"],
    "romebert+smart": ["train.args={}", "train.smart.enabled=true"],
}


def test_the_counter_sees_every_kind_of_host_read():
    x = torch.ones(3)
    with HostReads() as reads:
        x.sum().item(), x.tolist(), x.cpu(), x.numpy(), bool(x.sum() > 0), float(x.sum()), x.to("cpu")
        if x.sum() > 0:
            pass
        x.sum() + 1  # not a read
    assert reads.count == 8, reads.by_call


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_no_training_step_reads_a_device_value(strategy, tmp_path):
    name = strategy.split("+")[0]
    with counted_steps() as per_step:
        ft.finetune(QUICKSTART, [*quickstart_overrides(tmp_path, "r"), f'train.strategy="{name}"', *STRATEGIES[strategy],
                                 "task.synthetic.n_train=96", "train.epochs=1", "output.report=false",
                                 "output.calibrate=false", "output.evaluate_splits=[]"])
    assert per_step, "no training step ran"
    worst = max(per_step, key=lambda reads: sum(reads.values()))
    assert sum(worst.values()) <= ALLOWANCE, f"{strategy}: host reads in a step (call, where): {worst}"
    records = [json.loads(x) for x in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records)  # the logging step still reads the losses


def test_counted_steps_charges_each_read_to_its_step(monkeypatch):
    import eebench.train.loop as loop

    monkeypatch.setattr(loop, "run_step", lambda: torch.ones(2).sum().item())
    monkeypatch.setattr(loop, "optimizer_step", lambda: torch.ones(1).tolist())
    with counted_steps() as per_step:
        for _ in range(2):
            loop.run_step(), loop.optimizer_step()
    assert [sorted(call for call, _ in step) for step in per_step] == [["item", "tolist"]] * 2


def test_cuda_syncs_are_counted_from_torchs_sync_debug_warnings(monkeypatch):
    """The GPU check's counter (benchmarks/gpu.py syncs), its CUDA calls stood in for: what
    set_sync_debug_mode("warn") warns is counted, other warnings are not, and the mode is restored."""
    import warnings

    from eebench.train.host_reads import DeviceSyncs

    modes = [0]
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: modes[-1])
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    with DeviceSyncs() as syncs:
        warnings.warn("called a synchronizing CUDA operation")
        warnings.warn("something else")
    assert syncs.count == 1 and modes == [0, "warn", 0]


def test_several_processes_agree_on_the_reached_parameters_without_reading_the_device(monkeypatch):
    """Parallel.sum_optional with 2 processes (the collectives stood in for): which parameters a process
    reached is known on the host and reduced over a host group; the only read is of that host tensor."""
    import torch.distributed as dist

    from eebench.train.parallel import Parallel

    groups = []
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(dist, "all_reduce", lambda t, group=None: groups.append((t.device.type, group)))
    grads = [torch.ones(2), None, torch.ones(3)]
    like = [torch.zeros(2), torch.zeros(4), torch.zeros(3)]
    with HostReads() as reads:
        out = Parallel(rank=0, world=2).sum_optional(grads, like)
    assert reads.count == 0, reads.by_call
    assert groups[0] == ("cpu", None)  # the reached flags: a host tensor
    assert out[1] is None and torch.equal(out[0], torch.ones(2))  # nobody reached the second: it stays None
