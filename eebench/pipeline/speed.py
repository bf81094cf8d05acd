"""Measure the real early-exit engine at a calibrated setting against the full model."""

from __future__ import annotations

from eebench.console import console, progress
from eebench.data.load import load_split
from eebench.errors import UserError
from eebench.pipeline.trace import encode_split, ensure_trace
from eebench.policies import get_policy, setting_label
from eebench.run.folder import Run
from eebench.run.records import Speed


def check_counts(batch_size: int, limit: int | None, rounds: int) -> None:
    """--batch-size ≥ 2 (batch 1 is always measured), --limit ≥ 1, --rounds ≥ 1."""
    for name, value, least in (("--batch-size", batch_size, 2), ("--limit", limit, 1), ("--rounds", rounds, 1)):
        if value is not None and value < least:
            raise UserError(f"{name} {value}: must be at least {least}")


def speed(run: Run, policy_name: str, split: str, batch_size: int = 32, limit: int | None = None,
          rounds: int = 3, block: int = 100, device: str | None = None) -> dict:
    """Measure the real early-exit engine at the policy's calibrated setting against the full model
    (eebench.engine.benchmarking) on ``device`` (eebench.device's rule), check its exits against the trace, write
    eval/<split>/speed_<policy>.json (which names the device)."""
    from eebench.device import apply_precision, describe, resolve_device
    from eebench.engine import EarlyExitEngine
    from eebench.model.build import load_model
    from eebench.engine.benchmarking import (batched_times, length_batches, single_batches, stream_times, summary, sync_cost_us,
                               warm_up)

    policy = get_policy(policy_name)
    policy.check_task(run.spec.is_regression, f"task {run.spec.name}: ")  # before suggesting to calibrate it
    cal = next((c for c in run.calibrations() if c.policy == policy_name), None)
    if cal is None:
        raise UserError(f"{run.dir} has no calibration for policy {policy_name!r} "
                        f"({run.calibration_path(policy_name)} missing); "
                        f"run eebench calibrate {run.dir} --policy {policy_name} --target-time-pct 50 first")
    target = resolve_device(device)
    trace = ensure_trace(run, split, device=device)
    n = len(trace.logits) if limit is None else min(limit, len(trace.logits))
    expected = policy.exits(trace, [cal.setting])[0][:n]
    model, tokenizer, _ = load_model(run.model_dir, run.model_task)
    model.to(target)
    precision = apply_precision(target, run.recipe.train)
    dtype = precision.dtype
    engine = EarlyExitEngine(model, policy_name, cal.setting, trace.regression, dtype=dtype)
    data = encode_split(run.recipe, tokenizer, load_split(run.spec, run.recipe.task, split))
    singles, batches = single_batches(data, n, target), length_batches(data, n, batch_size, target)
    where = " ".join(describe(target).values())
    shown = precision.label + (", tf32" if precision.tf32 else "")
    console.print(f"timing {n} examples of {split} on {where} ({shown}): batch 1 x "
                  f"{rounds} rounds (engine and full model), then batch {batch_size}"
                  + ("; --limit N times fewer" if limit is None and n > 500 else ""))
    shapes = warm_up(engine, singles, batches)
    sync_us = sync_cost_us(engine, singles[0]) if singles else None
    with progress() as bars:
        one = bars.add_task(f"{split} batch 1 (engine, then full model)", total=n * rounds, info="")
        per_round: list[float] = []
        t_engine, t_full, got = stream_times(engine, singles, rounds, block, lambda k: bars.advance(one, k), per_round)
        many = bars.add_task(f"{split} batch {batch_size}", total=n, info="")
        tb_engine, tb_full, got_b = batched_times(engine, batches, n, lambda k: bars.advance(many, k))
    record = {"policy": policy_name, "setting": cal.setting, "calibrated_on": cal.split,
              "split": run.split_name(split),
              **summary(expected, trace.num_layers, t_engine, t_full, got, tb_engine, tb_full, got_b, batch_size,
                        target, sync_us, per_round), "warmed_shapes": shapes,
              "precision": precision.label, "tf32": precision.tf32,
              "agreement_floor": precision.agreement_floor}
    Speed.model_validate(record).save(run.eval_dir(split) / f"speed_{policy_name}.json")
    _print_record(record, split, policy_name, cal, n, where, trace.num_layers, batch_size, rounds)
    return record


def _print_record(record: dict, split: str, policy_name: str, cal, n: int, where: str, n_layers: int,
                  batch_size: int, rounds: int) -> None:
    """The measured speed, the exit decision's cost, and warnings for noisy timing or exits that
    differ from the trace's."""
    b1, bb = record["batch_1"], record[f"batch_{batch_size}"]
    console.print(f"{split} @ {policy_name} ({setting_label(cal.setting)}), {n} examples on {where}, "
                  f"{record['threads']} threads: mean exit layer {record['mean_exit_layer']:.2f} of "
                  f"{n_layers}, ideal speed-up {record['ideal_speedup']:.2f}x")
    console.print(f"  batch 1: engine p50 {b1['engine_p50_ms']:.2f} ms p95 {b1['engine_p95_ms']:.2f} ms | full "
                  f"p50 {b1['full_p50_ms']:.2f} ms p95 {b1['full_p95_ms']:.2f} ms | measured speed-up "
                  f"{b1['measured_speedup']:.2f}x = {b1['of_ideal']:.2f} of ideal")
    console.print(f"  batch {batch_size}: measured speed-up {bb['measured_speedup']:.2f}x = {bb['of_ideal']:.2f} "
                  f"of ideal; exits equal to the trace: {100 * b1['agreement']:.2f}% (batch 1), "
                  f"{100 * bb['agreement']:.2f}% (batch {batch_size})")
    if record["sync_us_per_layer"] is not None:
        console.print(f"  exit decision: {record['sync_us_per_layer']:.1f} µs per layer for the host round trip "
                      f"(a full-model layer at batch 1: {1000 * record['full_ms_per_layer_batch_1']:.1f} µs)")
    from eebench.engine.benchmarking import NOISY_SPREAD

    if b1["round_spread"] is not None and b1["round_spread"] > NOISY_SPREAD:
        console.print(f"[yellow]warning:[/] noisy timing: the {rounds} rounds' speed-ups differ by "
                      f"{100 * b1['round_spread']:.0f}% ({', '.join(f'{x:.2f}x' for x in b1['speedup_per_round'])}); "
                      f"something else was using the machine: measure again when it is idle (and with more --rounds)")
    elif b1["round_spread"] is None:
        console.print("note: one round cannot show whether the timing was noisy; use --rounds 3 for that")
    agreement, floor = min(b1["agreement"], bb["agreement"]), record["agreement_floor"]
    if agreement < floor:
        console.print(f"[yellow]warning:[/] the engine's exits differ from the trace simulation on "
                      f"{100 * (1 - agreement):.2f}% of the examples, more than {record['precision']} rounding "
                      f"explains (at least {100 * floor:.1f}% must agree; eebench.device.AGREEMENT_FLOOR)")
    elif agreement < 1.0:
        console.print(f"  {100 * (1 - agreement):.2f}% of the exits differ from the trace: within {record['precision']}"
                      f"{' + TF32' if record.get('tf32') else ''} rounding (at least {100 * floor:.1f}% must agree)")
