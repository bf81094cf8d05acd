"""Measured wall-clock of the real early-exit engine (eebench.engine) against the full model.

Every time is read through eebench.device.Clock: the device is synchronised around each timed
call, and on a GPU CUDA events time it; every input length is warmed up first.

Batch size 1 is measured as a *stream*: the engine serves a block of consecutive examples, then
the full model (every layer, final head only) serves the same block, the order alternating per
block and per round; each example's time is the median of its rounds. That is what a deployed
model sees — consecutive requests, the weights of the layers it runs warm in the CPU caches — and
alternating blocks cancel the machine's drift. Larger batches are timed per batch (examples sorted
by length, as a server batches them), engine with row compaction against the full model.

The ideal speed-up is L / mean(exit layer); the measured one is always reported beside it.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from eebench.device import Clock, describe, synchronize
from eebench.engine.core import EarlyExitEngine


def timed(fn: Callable, batch: dict, clock: Clock | None = None) -> float:
    """Seconds of ``fn(batch)``, the device synchronised around it (CUDA events on a GPU)."""
    clock = clock or Clock(torch.device("cpu"))
    return clock.seconds(fn, batch)


def stream_times(engine: EarlyExitEngine, singles: list[dict], rounds: int = 3, block: int = 100,
                 advance: Callable[[int], None] | None = None,
                 per_round: list | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per example: engine seconds, full-model seconds (medians over rounds), engine exit layer.
    ``per_round`` (a list) receives each round's measured speed-up: their spread says how noisy
    the machine was while timing."""
    exits = np.zeros(len(singles), dtype=np.int64)

    def run(i: int) -> None:
        exits[i] = engine.run(singles[i])[0][0]

    times = stream_contenders({"engine": run, "full": lambda i: engine.run_full(singles[i])}, len(singles),
                              engine.device, rounds, block, advance)
    if per_round is not None:
        per_round += [float(full.sum() / eng.sum()) for eng, full in zip(times["engine"], times["full"])]
    return np.median(times["engine"], 0), np.median(times["full"], 0), exits


def stream_contenders(contenders: dict[str, Callable[[int], object]], n: int, device: torch.device,
                      rounds: int = 3, block: int = 100,
                      advance: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Seconds of every contender on every example, Shape [rounds, n] per contender: each serves a
    block of consecutive examples in turn, the order rotating per block and per round, so all of them
    see the same machine drift."""
    clock = Clock(device)
    names = list(contenders)
    times = {name: np.zeros((rounds, n)) for name in names}
    for r in range(rounds):
        for k, start in enumerate(range(0, n, block)):
            shift = (r + k) % len(names)
            for name in names[shift:] + names[:shift]:
                fn = contenders[name]
                for i in range(start, min(n, start + block)):
                    times[name][r, i] = clock.seconds(fn, i)
            if advance is not None:
                advance(min(n, start + block) - start)
    return times


NOISY_SPREAD = 0.10
"""Rounds whose speed-ups differ by more than this share of their median: the timing is noisy."""


def round_spread(speedups: list[float]) -> float | None:
    """(max − min) / median of the rounds' speed-ups; None with fewer than 2 rounds."""
    if len(speedups) < 2:
        return None
    return float((max(speedups) - min(speedups)) / np.median(speedups))


def batched_times(engine: EarlyExitEngine, batches: list[tuple[np.ndarray, dict]], n: int,
                  advance: Callable[[int], None] | None = None) -> tuple[float, float, np.ndarray]:
    """Total engine seconds, total full-model seconds, and the engine's exit layer of every example."""
    clock = Clock(engine.device)
    t_engine = t_full = 0.0
    exits = np.zeros(n, dtype=np.int64)
    for index, batch in batches:
        with clock.time() as t:
            got, _ = engine.run(batch)
        t_engine += t[0]
        t_full += clock.seconds(engine.run_full, batch)
        exits[index] = got
        if advance is not None:
            advance(len(index))
    return t_engine, t_full, exits


def warm_up(engine: EarlyExitEngine, singles: list[dict], batches: list[tuple[np.ndarray, dict]],
            per_length: int = 2) -> int:
    """Run engine and full model on every input length the timing will see (kernels, allocator and
    autotuning are per shape on a GPU), ``per_length`` times each; returns the shapes warmed."""
    seen: dict[tuple, dict] = {}
    for batch in singles + [b for _, b in batches]:
        seen.setdefault(tuple(batch["input_ids"].shape), batch)
    for batch in seen.values():
        for _ in range(per_length):
            engine.run(batch), engine.run_full(batch)
    synchronize(engine.device)
    return len(seen)


def sync_cost_us(engine: EarlyExitEngine, batch: dict, repeats: int = 200) -> float:
    """The fixed cost of one exit decision's round trip, µs: copying a layer's exit logits to the host
    and waiting for them, measured with the device's queue empty. The engine pays it once per layer
    it runs (data-dependent exit needs the decision on the host); compare it with the per-layer time."""
    logits = torch.zeros(batch["input_ids"].shape[0], engine.model.num_labels, device=engine.device)
    synchronize(engine.device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        logits.to("cpu", non_blocking=True)
        synchronize(engine.device)
    return 1e6 * (time.perf_counter() - t0) / repeats


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def single_batches(data, n: int, device: torch.device = torch.device("cpu")) -> list[dict]:
    """The first n examples as batches of one (model inputs only), on ``device``."""
    out = []
    for i in range(n):
        batch = data.collate([data[i]])
        batch.pop("index"), batch.pop("labels", None)
        out.append(to_device(batch, device))
    return out


def length_batches(data, n: int, size: int, device: torch.device = torch.device("cpu")) -> list[tuple[np.ndarray, dict]]:
    """The first n examples in batches of ``size`` of similar length: (dataset indices, inputs on ``device``)."""
    order = np.argsort(data.lengths()[:n], kind="stable")
    out = []
    for start in range(0, n, size):
        batch = data.collate(data.__getitems__([int(i) for i in order[start: start + size]]))
        index = batch.pop("index").numpy()
        batch.pop("labels", None)
        out.append((index, to_device(batch, device)))
    return out


def summary(expected: np.ndarray, n_layers: int, t_engine: np.ndarray, t_full: np.ndarray,
            got: np.ndarray, tb_engine: float, tb_full: float, got_b: np.ndarray, batch_size: int,
            device: torch.device = torch.device("cpu"), sync_us: float | None = None,
            per_round: list[float] | None = None) -> dict:
    """The record `eebench speed` writes: ideal and measured speed-ups side by side."""
    from eebench.maths.timing import measured as measured_timing, time_and_speedup

    ideal_timing = time_and_speedup(float(expected.mean()), n_layers)
    ideal = ideal_timing["speedup"]
    measured = measured_timing(float(t_engine.sum()), float(t_full.sum()))["speedup"]
    ms = lambda x, q: round(1000 * float(np.percentile(x, q)), 3)  # noqa: E731
    return {
        "examples": len(expected),
        "mean_exit_layer": float(expected.mean()),
        "time_pct": float(ideal_timing["time_pct"]),
        "ideal_speedup": float(ideal),
        "batch_1": {
            "protocol": "stream",
            "engine_p50_ms": ms(t_engine, 50), "engine_p95_ms": ms(t_engine, 95),
            "full_p50_ms": ms(t_full, 50), "full_p95_ms": ms(t_full, 95),
            "measured_speedup": float(measured), "of_ideal": float(measured / ideal),
            # long inputs cost more per layer and tend to exit later: each example's exit weighted
            # by its own full-model time
            "cost_weighted_ideal": float(t_full.sum() / (t_full * got / n_layers).sum()),
            "agreement": float((got == expected).mean()),
            "speedup_per_round": [round(x, 4) for x in per_round or []],
            "round_spread": round_spread(per_round or []),
        },
        f"batch_{batch_size}": {
            "engine_s": round(tb_engine, 4), "full_s": round(tb_full, 4),
            "measured_speedup": measured_timing(tb_engine, tb_full)["speedup"],
            "of_ideal": measured_timing(tb_engine, tb_full)["speedup"] / ideal,
            "agreement": float((got_b == expected).mean()),
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        **describe(device),
        "timer": "cuda events" if torch.device(device).type == "cuda" else "perf_counter, device synchronised",
        "sync_us_per_layer": None if sync_us is None else round(sync_us, 2),
        "full_ms_per_layer_batch_1": round(1000 * float(np.median(t_full)) / n_layers, 4),
    }
