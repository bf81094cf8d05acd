"""The GPU path, checked without a GPU as far as torch allows: the device rule and its records, device
plumbing caught by a default device that is not the model's, the fp16 MetaBERT last batch (a CPU
GradScaler, as accelerate gives on CUDA), CsdBERT under bf16 on 2 processes (gloo), the launcher's
slot → device mapping under a parent mask, and the command an N-GPU Slurm cell runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import ROOT, quickstart_overrides

QUICKSTART = str(ROOT / "recipes" / "quickstart.toml")


# ------------------------------------------------------------------------------ the device rule
def test_the_accelerator_is_the_default_and_device_names_are_checked(monkeypatch):
    from eebench.device import resolve_device
    from eebench.errors import UserError

    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device(None) == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UserError, match=r"only 2 CUDA device\(s\) are visible"):
        resolve_device("cuda:2")
    with pytest.raises(UserError, match="not a device name"):
        resolve_device("gpu0")


def test_inference_runs_in_the_recipe_precision_on_a_gpu_only():
    from eebench.device import inference_dtype

    assert inference_dtype(torch.device("cuda", 0), "bf16") is torch.bfloat16
    assert inference_dtype(torch.device("cuda", 0), "fp16") is torch.float16
    assert inference_dtype(torch.device("cuda", 0), "no") is None
    assert inference_dtype(torch.device("cpu"), "bf16") is None


def test_every_command_applies_the_recipes_precision_and_tf32(monkeypatch):
    """TF32 follows the recipe on CUDA whatever the autocast dtype (a bf16 run's fp32 work uses it too),
    and is switched off elsewhere; the agreement floor of engine against trace follows the precision."""
    import eebench.device as device
    from eebench.recipe import TrainConfig

    switched = []
    monkeypatch.setattr(device, "enable_tf32", switched.append)
    bf16 = device.apply_precision(torch.device("cuda", 0), TrainConfig(mixed_precision="bf16", tf32=True))
    assert (bf16.dtype, bf16.tf32, bf16.label) == (torch.bfloat16, True, "bf16") and switched == [True]
    fp32 = device.apply_precision(torch.device("cuda", 0), TrainConfig(tf32=True))
    assert (fp32.label, fp32.tf32, fp32.agreement_floor) == ("fp32", True, device.AGREEMENT_FLOOR["tf32"])
    cpu = device.apply_precision(torch.device("cpu"), TrainConfig(mixed_precision="bf16", tf32=True))
    assert (cpu.dtype, cpu.tf32, cpu.agreement_floor) == (None, False, 1.0) and switched[-1] is False
    assert bf16.agreement_floor < 1.0


# ------------------------------------------------------------------------------ device plumbing
def _tiny_engine(policy: str = "entropy", setting: dict | None = None):
    from transformers import AutoConfig, AutoModel

    from eebench.engine import EarlyExitEngine
    from eebench.model.multiexit import MultiExitModel

    torch.manual_seed(0)
    config = AutoConfig.for_model("bert", hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=50, max_position_embeddings=32)
    model = MultiExitModel(AutoModel.from_config(config), 3).eval()
    if setting is None:  # a threshold some rows pass early and some do not
        with torch.no_grad():
            p = model(**_batch()).logits[:, 0].softmax(-1)  # layer 1: half the rows leave there
        setting = {"threshold": float((-(p * p.log()).sum(-1)).median())}
    return EarlyExitEngine(model, policy, setting)


def _batch(b: int = 6, t: int = 9) -> dict:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, 6:] = 0
    return {"input_ids": torch.randint(1, 50, (b, t), generator=g), "attention_mask": mask}


def test_engine_outputs_live_on_the_models_device_not_the_default_one():
    """With the default device set elsewhere (meta), every tensor the engine makes must still follow
    the model: an allocation that forgets ``device=`` lands on meta and the output is caught."""
    engine = _tiny_engine()
    batch = _batch()
    want_exits, want = engine.run(batch)
    assert want_exits.min() < want_exits.max()  # some rows leave before others: compaction ran
    with torch.device("meta"):
        exits, logits = engine.run(batch)
    assert logits.device == torch.device("cpu") and logits.dtype == torch.float32
    assert (exits == want_exits).all() and torch.equal(logits, want)


def test_the_trace_is_computed_on_the_models_device_in_fp32():
    from eebench.data.encode import Encoded, eval_loader
    from eebench.trace_data import compute_signals

    engine = _tiny_engine()
    rows = [{"input_ids": list(range(1, 5 + i % 4)), "attention_mask": [1] * (4 + i % 4)} for i in range(10)]
    data = Encoded(rows, np.zeros(10, dtype=np.int64), 0)
    plain = compute_signals(engine.model, eval_loader(data, 4), torch.device("cpu"))
    assert plain["logits"].dtype == np.float32
    bf16 = compute_signals(engine.model, eval_loader(data, 4), torch.device("cpu"), dtype=torch.bfloat16)
    assert bf16["logits"].dtype == np.float32  # stored fp32 whatever the compute precision
    assert np.abs(bf16["logits"] - plain["logits"]).max() < 0.1


def test_timers_synchronise_and_speed_names_its_device():
    from eebench.device import Clock
    from eebench.engine.benchmarking import summary, sync_cost_us, warm_up

    engine = _tiny_engine()
    singles = [{k: v[i:i + 1] for k, v in _batch().items()} for i in range(3)]
    assert warm_up(engine, singles, [(np.arange(6), _batch())]) == 2  # lengths 9 (one shape) + the batch
    assert Clock(torch.device("cpu")).seconds(engine.run_full, singles[0]) > 0
    assert sync_cost_us(engine, singles[0], repeats=5) >= 0
    exits = np.array([2, 3, 4])
    record = summary(exits, 4, np.ones(3), 2 * np.ones(3), exits, 1.0, 2.0, exits, 32, torch.device("cpu"), 3.0)
    assert record["device"] == "cpu" and record["sync_us_per_layer"] == 3.0
    assert record["timer"].startswith("perf_counter")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from eebench.pipeline.finetune import finetune

    root = tmp_path_factory.mktemp("device")
    run = finetune(QUICKSTART, quickstart_overrides(root, "dev") + ["output.report=false"])
    return run.dir


def test_evaluate_calibrate_speed_record_the_device_they_ran_on(trained, monkeypatch):
    import eebench.device
    from eebench.cli import app
    from eebench.trace_data import load_trace

    asked = []
    real = eebench.device.resolve_device
    monkeypatch.setattr(eebench.device, "resolve_device", lambda name=None: asked.append(name) or real(name))
    runner = CliRunner()
    status = json.loads((trained / "status.json").read_text())
    assert status["device"] == "cpu" and status["tf32"] is False
    switched = []
    monkeypatch.setattr(eebench.device, "enable_tf32", switched.append)
    result = runner.invoke(app, ["evaluate", str(trained), "--split", "test", "--retrace"])
    assert result.exit_code == 0, result.output
    assert None in asked  # no --device: the rule (the accelerator when there is one)
    trace = load_trace(trained / "traces" / "test.npz")
    assert trace.device.startswith("cpu") and (trace.precision, trace.tf32) == ("fp32", False)
    assert switched == [False]  # a trace outside finetune applies the recipe's TF32 (off the GPU: off)
    result = runner.invoke(app, ["speed", str(trained), "--limit", "8", "--rounds", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads((trained / "eval" / "dev" / "speed_entropy.json").read_text())
    assert record["device"] == "cpu" and record["sync_us_per_layer"] is not None
    assert (record["precision"], record["tf32"], record["agreement_floor"]) == ("fp32", False, 1.0)
    assert switched == [False, False]  # speed applied the recipe's precision too
    assert "cpu" in asked
    for command in (["evaluate", str(trained), "--device", "cuda:7"],
                    ["calibrate", str(trained), "--device", "cuda"],
                    ["speed", str(trained), "--device", "cuda:0"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and "--device cuda" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ crashes
def test_fp16_metabert_skips_a_last_batch_without_an_episode(tmp_path, monkeypatch):
    """130 examples, meta batch 64: the last global batch has 2 rows, no episode, no gradient. With the
    fp16 GradScaler accelerate uses on CUDA this raised "No inf checks were recorded"."""
    import eebench.pipeline.finetune as ft

    real = ft.accelerator_for

    def fp16_like(recipe, run, *device):
        accelerator = real(recipe, run, *device)
        accelerator.scaler = torch.amp.GradScaler("cpu")
        return accelerator

    monkeypatch.setattr(ft, "accelerator_for", fp16_like)
    ft.finetune(QUICKSTART, [*quickstart_overrides(tmp_path, "maml"), "task.synthetic.n_train=130",
                             'train.strategy="metabert"', "train.args={meta_epochs=1}", "train.epochs=0",
                             "output.report=false", "output.calibrate=false", "output.evaluate_splits=[]"])
    records = [json.loads(line) for line in (tmp_path / "maml" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "step" in r]
    assert steps[-1] == {"stage": "meta", "epoch": 1, "step": 3, "lr": steps[-1]["lr"], "skipped": "no gradient", "rows": 2}
    assert all(r["loss"] > 0 for r in steps if not r.get("skipped"))  # no step logged as loss 0.0


def test_fp16_overflow_steps_are_counted_and_logged_not_reported_as_taken(tmp_path, monkeypatch):
    """Three forced overflows (an inf gradient) under the fp16 GradScaler: the scaler skips them and
    halves its scale each time (2^16 → 2^13); train_log shows three skipped steps with the new scale and
    the running count, the epoch summary counts them, and the weights moved only on the other steps."""
    import eebench.pipeline.finetune as ft
    import eebench.train.loop as loop

    real_accelerator, real_step = ft.accelerator_for, loop.run_step

    def fp16_like(recipe, run, *device):
        accelerator = real_accelerator(recipe, run, *device)
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
        return accelerator

    def overflowing(job, stage, inputs, ctx, params, *rest):
        parts = real_step(job, stage, inputs, ctx, params, *rest)
        if ctx.step in (1, 2, 4):
            next(p for p in params if p.grad is not None).grad.view(-1)[0] = float("inf")
        return parts

    monkeypatch.setattr(ft, "accelerator_for", fp16_like)
    monkeypatch.setattr(loop, "run_step", overflowing)
    ft.finetune(QUICKSTART, [*quickstart_overrides(tmp_path, "fp16"), 'train.strategy="joint"', "train.args={}",
                             "train.epochs=1", "task.synthetic.n_train=256", "output.report=false",
                             "output.calibrate=false", "output.evaluate_splits=[]"])
    records = [json.loads(line) for line in (tmp_path / "fp16" / "train_log.jsonl").read_text().splitlines()]
    skipped = [r for r in records if r.get("skipped")]
    assert [(r["step"], r["skipped"], r["scale"], r["overflow_skips"]) for r in skipped] == [
        (2, "overflow", 2.0 ** 15, 1), (3, "overflow", 2.0 ** 14, 2), (5, "overflow", 2.0 ** 13, 3)]
    summary = next(r["epoch_summary"] for r in records if "epoch_summary" in r)
    assert summary["overflow_skips"] == 3


@pytest.mark.multiprocess
def test_csdbert_bf16_on_two_processes_with_a_one_row_last_batch(tmp_path):
    """65 examples on 2 processes: the last micro-batch leaves one process without rows; its fp32
    placeholders met the other's bf16 logits in the all-gather ("Received data size doesn't match")."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "eebench.cli", "finetune", QUICKSTART,
           *[x for o in [*quickstart_overrides(tmp_path, "csd"), "task.synthetic.n_train=65",
                         'train.strategy="csdbert"', "train.args={}", 'train.mixed_precision="bf16"',
                         "output.report=false", "output.calibrate=false", "output.evaluate_splits=[]"]
             for x in ("--set", o)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    status = json.loads((tmp_path / "csd" / "status.json").read_text())
    assert status["processes"] == 2 and status["mixed_precision"] == "bf16" and status["trained"]


def test_gather_rows_refuses_disagreeing_dtypes():
    from eebench.train.parallel import Parallel

    class Two(Parallel):  # two processes whose other one sends fp32 rows
        def all_objects(self, obj):
            return [obj, [(0, shape, "float32") for _, shape, _ in obj]]

    with pytest.raises(RuntimeError, match="disagree on the rows' shape or dtype"):
        Two(0, 2).gather_rows(torch.zeros(1, 3, dtype=torch.bfloat16))


# ------------------------------------------------------------------------------ launchers
def test_worker_slots_map_to_the_parents_visible_devices():
    from eebench.errors import UserError
    from eebench.jobs import visible_devices, worker_masks

    assert visible_devices({"CUDA_VISIBLE_DEVICES": "4,5"}, 2) == ["4", "5"]
    assert visible_devices({}, 3) == ["0", "1", "2"]
    mig = "MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000001,MIG-1b2c3d4e-aaaa-bbbb-cccc-000000000002"
    assert visible_devices({"CUDA_VISIBLE_DEVICES": mig}, 2) == mig.split(",")
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb,GPU-cc"}, 2) == ["GPU-aa", "GPU-bb"]
    assert worker_masks(2, ["4", "5"]) == ["4", "5"]
    assert worker_masks(2, mig.split(",")) == mig.split(",")
    assert worker_masks(2, ["0", "1", "2", "3"], per_worker=2) == ["0,1", "2,3"]
    assert worker_masks(3, [], 1) == [None, None, None]
    with pytest.raises(UserError, match="--share-gpus"):
        worker_masks(3, ["4", "5"])
    assert worker_masks(3, ["4", "5"], share=True) == ["4", "5", "4"]


def test_run_local_pins_each_worker_to_a_parent_device(tmp_path, monkeypatch):
    import eebench.jobs as jobs

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    import threading
    import time

    seen, running, lock = [], set(), threading.Lock()

    def fake_call(cmd, stdout=None, stderr=None, env=None):
        """A cell that takes a moment, so both workers hold one at once (a cell ending at once lets
        one worker take them all, which is right but shows nothing); no two running cells share a GPU."""
        mask = env["CUDA_VISIBLE_DEVICES"]
        with lock:
            assert mask not in running, f"two running cells on GPU {mask}"
            running.add(mask)
            seen.append((mask, cmd))
        time.sleep(0.3)
        with lock:
            running.discard(mask)
        return 0

    monkeypatch.setattr(subprocess, "call", fake_call)
    cells = [jobs.Cell(tmp_path / f"r{i}.toml", [f"c{i}"]) for i in range(4)]
    jobs.run_local(cells, None, tmp_path / "logs")
    assert sorted({mask for mask, _ in seen}) == ["4", "5"] and len(seen) == 4
    seen.clear()
    jobs.run_local(cells[:1], None, tmp_path / "logs", gpus_per_job=2)
    (mask, cmd), = seen
    assert mask == "4,5" and "torch.distributed.run" in cmd and "--nproc_per_node=2" in cmd


def test_a_slurm_cell_with_n_gpus_starts_n_processes():
    from eebench.jobs import CellJob

    one = CellJob("/r/a.toml", None).command()
    four = CellJob("/r/a.toml", None, ["module load cuda"], ["train.seed=2"], processes=4).command()
    assert "torch.distributed.run" not in one and one.endswith("finetune /r/a.toml --if-missing")
    lines = four.splitlines()
    assert lines[0] == "module load cuda"
    assert "-m torch.distributed.run --standalone --nproc_per_node=4 -m eebench.cli finetune /r/a.toml" in lines[1]
    assert lines[1].endswith("--if-missing --set train.seed=2")


@pytest.mark.multiprocess
def test_a_two_gpu_slurm_cell_trains_on_two_processes_through_submitits_local_executor(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from eebench.jobs import CellJob

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    executor = submitit.LocalExecutor(folder=str(tmp_path / "slurm" / "%j"))
    executor.update_parameters(timeout_min=10)
    overrides = [*quickstart_overrides(tmp_path, "cell"), "output.report=false", "output.evaluate_splits=[]",
                 "output.calibrate=false"]
    job = executor.submit(CellJob(QUICKSTART, None, overrides=overrides, processes=2))
    assert job.result() == "finished"
    status = json.loads((tmp_path / "cell" / "status.json").read_text())
    assert status["processes"] == 2 and status["state"] == "finished"
    assert "eebench finetune" in Path(job.paths.stdout).read_text()  # streamed into the job's log


def test_cka_stays_fp32_under_autocast():
    from eebench.model.similarity import centered_gram

    hidden, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gram = centered_gram(hidden, mask)
    assert gram.dtype == torch.float32
    torch.testing.assert_close(gram, centered_gram(hidden, mask))


def test_the_step_loader_leaves_torchs_global_generator_alone():
    """Building batches ahead must not shift the dropout masks: a run trains exactly as it did when
    each step built its own batch (the CI regression run checks the numbers end to end)."""
    from eebench.train.parallel import Parallel
    from eebench.train.step import step_loader
    from eebench.train.strategies import Stage

    class Rows:
        def __len__(self):
            return 8

        def __getitems__(self, index):
            return index

        def collate(self, items):
            return {"input_ids": torch.tensor(items)}

    stage = Stage("s", 1, 1e-3, trains=lambda m: [], loss=lambda *a: None)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    loader = step_loader(Rows(), [[0, 1], [2, 3], [4, 5]], 1, Parallel(), 1, stage, False,
                         torch.device("cpu"), 0)
    got = [item["micro"][0]["input_ids"].tolist() for item in loader]
    assert got == [[2, 3], [4, 5]]
    assert torch.equal(torch.rand(3), expected)


def test_speed_records_each_rounds_speedup_and_flags_a_noisy_machine():
    from eebench.engine.benchmarking import NOISY_SPREAD, round_spread, summary

    exits = np.array([1, 2, 4])
    quiet = summary(exits, 4, np.ones(3), 2 * np.ones(3), exits, 1.0, 2.0, exits, 32, per_round=[2.0, 2.02, 1.99])
    busy = summary(exits, 4, np.ones(3), 2 * np.ones(3), exits, 1.0, 2.0, exits, 32, per_round=[1.5, 2.0, 1.7])
    assert quiet["batch_1"]["speedup_per_round"] == [2.0, 2.02, 1.99]
    assert quiet["batch_1"]["round_spread"] < NOISY_SPREAD < busy["batch_1"]["round_spread"]
    assert busy["batch_1"]["round_spread"] == pytest.approx(0.5 / 1.7)
    assert round_spread([2.0]) is None


@pytest.mark.parametrize("precision, warned", [("fp32", True), ("bf16", False)])
def test_exits_that_differ_from_the_trace_are_judged_against_the_precisions_floor(precision, warned, monkeypatch):
    """One exit in 100 differs: an alarm in fp32 (where exits must agree exactly), within bf16's rounding."""
    import eebench.pipeline.speed as speed
    from eebench.device import AGREEMENT_FLOOR
    from eebench.engine.benchmarking import summary

    printed = []
    monkeypatch.setattr(speed.console, "print", lambda text, **kw: printed.append(str(text)))
    expected = np.full(100, 2)
    got = expected.copy()
    got[0] = 3
    record = {**summary(expected, 4, np.ones(100), 2 * np.ones(100), got, 1.0, 2.0, got, 32, per_round=[2.0] * 3),
              "precision": precision, "tf32": False, "agreement_floor": AGREEMENT_FLOOR[precision]}
    cal = type("Cal", (), {"setting": {"threshold": 0.1}})()
    speed._print_record(record, "dev", "entropy", cal, 100, "cpu", 4, 32, 3)
    assert any("warning" in line and "1.00% of the examples" in line for line in printed) is warned
    assert any("within bf16 rounding" in line for line in printed) is not warned


def test_the_clock_records_its_events_on_the_selected_devices_stream(monkeypatch):
    """--device cuda:1 while the current device is cuda:0: the CUDA events must be recorded on cuda:1's
    stream (where the model's kernels run), not on the current device's (launch time only)."""
    from eebench.device import Clock

    recorded, synced = [], []

    class Stream:
        def __init__(self, device):
            self.device = torch.device(device)

    class Event:
        def __init__(self, enable_timing=False):
            self.stream = None

        def record(self, stream=None):
            recorded.append(stream.device if stream is not None else torch.device("cuda", 0))  # None: current

        def synchronize(self):
            pass

        def elapsed_time(self, other):
            return 2.0

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream(device or "cuda:0"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    clock = Clock(torch.device("cuda:1"))
    assert clock.seconds(lambda: None) == pytest.approx(0.002)
    assert recorded == [torch.device("cuda:1")] * 2 and synced == [torch.device("cuda:1")]


def test_nccl_barriers_name_their_gpu_and_the_group_is_closed(monkeypatch):
    import torch.distributed as dist

    from eebench.train.parallel import Parallel, close_process_group

    calls = []
    monkeypatch.setattr(dist, "barrier", lambda **kw: calls.append(kw))
    Parallel(rank=1, world=2, device=torch.device("cuda:3")).barrier()
    Parallel(rank=1, world=2, device=torch.device("cpu")).barrier()
    Parallel(rank=0, world=1, device=torch.device("cuda:0")).barrier()  # one process: no collective at all
    assert calls == [{"device_ids": [3]}, {}]
    closed = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: closed.append(True))
    close_process_group()
    assert closed == [True]


def test_mig_slices_are_counted_from_the_parents_mask():
    """A process sees one MIG instance whatever its mask names; the workers get every slice of the mask."""
    from eebench.jobs import visible_devices, worker_masks

    env = {"CUDA_VISIBLE_DEVICES": "MIG-aaaa,MIG-bbbb,MIG-cccc"}
    assert visible_devices(env, count=1) == ["MIG-aaaa", "MIG-bbbb", "MIG-cccc"]
    assert worker_masks(3, visible_devices(env, count=1)) == ["MIG-aaaa", "MIG-bbbb", "MIG-cccc"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "4,5,9"}, count=2) == ["4", "5"]  # plain GPUs: CUDA's rule


def test_second_order_maml_is_refused_at_load_when_attention_cannot_switch_to_eager():
    """Fused attention has no double backward: a backbone that is not eager and cannot switch gets one
    line before training; one that can switch, an eager one, or first-order MAML pass."""
    from types import SimpleNamespace

    from eebench.errors import UserError
    from eebench.pipeline.setup import check_second_order
    from eebench.recipe_io import load_recipe

    second = load_recipe(QUICKSTART, ['train.strategy="metabert"', "train.args={}"])
    first = load_recipe(QUICKSTART, ['train.strategy="metabert"', "train.args={first_order=true}"])
    stuck = SimpleNamespace(backbone=SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa")))
    with pytest.raises(UserError, match="first_order = true"):
        check_second_order("r.toml", second, stuck)
    check_second_order("r.toml", first, stuck)
    eager = SimpleNamespace(backbone=SimpleNamespace(config=SimpleNamespace(_attn_implementation="eager")))
    check_second_order("r.toml", second, eager)
    switchable = SimpleNamespace(backbone=SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa"),
                                                          set_attn_implementation=lambda name: None))
    check_second_order("r.toml", second, switchable)


def test_metabert_gives_every_process_an_episode_or_is_refused_at_load(monkeypatch):
    """meta_batch 2 on 8 GPUs left 6 ranks idle in the meta stage: one line before training now; a count
    that is no multiple of the processes is said."""
    from eebench.errors import UserError
    from eebench.pipeline import setup
    from eebench.recipe_io import load_recipe
    from eebench.train.maml import my_episodes

    two = load_recipe(QUICKSTART, ['train.strategy="metabert"', "train.args={meta_batch=2}"])
    with pytest.raises(UserError, match=r"meta_batch = 2 episodes for 8 processes leaves 6 of them"):
        setup.check_meta_batch("r.toml", two, 8)
    setup.check_meta_batch("r.toml", two, 2)
    said = []
    monkeypatch.setattr(setup.console, "print", lambda text, **kw: said.append(text))
    ten = load_recipe(QUICKSTART, ['train.strategy="metabert"', "train.args={meta_batch=10}"])
    setup.check_meta_batch("r.toml", ten, 8)
    assert said and "some take 2 episodes, others 1" in said[0]
    # dealt round-robin: with meta_batch = processes, each rank gets exactly one episode
    batch, labels = {"input_ids": torch.zeros(64, 4, dtype=torch.long)}, torch.zeros(64, dtype=torch.long)
    args = SimpleNamespace(meta_batch=8, support_size=4)
    for rank in range(8):
        mine, count = my_episodes(batch, labels, args, SimpleNamespace(active=True, rank=rank, world=8))
        assert (len(mine), count) == (1, 8)


def test_the_engine_checks_the_transformers_mask_builders_it_uses_when_it_is_made(monkeypatch):
    """A transformers without a mask builder the engine calls: one line naming it when the engine is made
    (speed refuses before timing), not an AttributeError in the first batch."""
    import transformers.masking_utils

    from eebench.errors import UserError

    _tiny_engine(setting={"threshold": 0.5})  # present: fine
    monkeypatch.delattr(transformers.masking_utils, "create_bidirectional_mask")
    with pytest.raises(UserError, match=r"masking_utils\.create_bidirectional_mask, which transformers .* lacks"):
        _tiny_engine(setting={"threshold": 0.5})
