"""Sweep speed of the offline exit policies on a 10,000-example, 12-layer trace.

    python benchmarks/policy_sweep_speed.py [--examples 10000] [--layers 12] [--repeat 5]

Sweeps 100 settings of each of entropy, max_prob, LTE and CKA and every patience value (1..L-1):
exit layers, time%, speed-up, histogram and accuracy per setting (eebench.calibration.sweep), and
prints the total against the 50 ms target (best of --repeat runs).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from eebench.calibration import sweep
from eebench.data.tasks import get_task
from eebench.maths.fastsweep import sweep_arrays
from eebench.policies import POLICIES, argmax
from eebench.trace_data import Trace


def synthetic_trace(n: int, layers: int, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    signal = np.linspace(0.2, 3.0, layers)[None, :, None] * rng.normal(1.0, 0.7, (n, 1, 1))
    logits = np.concatenate([-signal, signal], -1) * np.where(labels[:, None, None] == 1, 1, -1)
    logits = (logits + rng.normal(0, 1.0, logits.shape)).astype(np.float32)
    lte = rng.uniform(size=(n, layers)).astype(np.float32)
    cka = np.clip(0.8 + np.cumsum(rng.normal(0.01, 0.03, (n, layers - 1)), 1), 0, 1).astype(np.float32)
    return Trace("dev", "bench", np.arange(n).astype(str), logits, labels, False, lte, cka)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    trace = synthetic_trace(a.examples, a.layers)
    spec = get_task("sst2")
    grids = {
        "entropy": [{"threshold": t} for t in np.linspace(0, 0.7, 100)],
        "max_prob": [{"threshold": t} for t in np.linspace(0.5, 1.0, 100)],
        "patience": [{"patience": p} for p in range(1, a.layers)],
        "lte": [{"threshold": t} for t in np.linspace(0, 1, 100)],
        "cka": [{"theta": th, "count": r} for th in np.linspace(-0.05, 0.1, 10) for r in range(1, 11)],
    }
    def core(policy, settings):  # the arrays only: exit histogram, mean exit layer, accuracy
        correct = argmax(trace.logits) == trace.labels[:, None]
        if policy.fast_keys is None:  # exits of all settings at once, then one gather
            exits = policy.exits(trace, settings)
            np.take(correct.ravel(), exits + (np.arange(exits.shape[1]) * trace.num_layers - 1)).mean(1)
            return
        for key, thresholds, strict, _ in policy.fast_keys(trace, settings):
            sweep_arrays(key, thresholds, strict, correct)

    best, best_core = {}, {}
    jobs = [(best, lambda policy, settings: sweep(trace, spec, policy, settings)), (best_core, core)]
    for rep in range(a.repeat):
        for name, settings in grids.items():
            for times, fn in jobs[::1 if rep % 2 == 0 else -1]:  # alternating: the second finds memory warm
                t0 = time.perf_counter()
                fn(POLICIES[name], settings)
                times[name] = min(times.get(name, 1e9), time.perf_counter() - t0)
    print(f"trace: {a.examples} examples x {a.layers} layers; best of {a.repeat}")
    print(f"{'policy':10s} {'settings':>8s}  {'sweep() table':>13s}  {'arrays only':>11s}")
    for name, seconds in best.items():
        print(f"{name:10s} {len(grids[name]):8d}  {1000 * seconds:10.1f} ms  {1000 * best_core[name]:8.1f} ms")
    total, total_core = 1000 * sum(best.values()), 1000 * sum(best_core.values())
    print(f"{'total':10s} {sum(len(g) for g in grids.values()):8d}  {total:10.1f} ms  {total_core:8.1f} ms")
    print(f"target <= 50 ms: sweep() tables {'met' if total <= 50 else 'NOT met'} (ratio {total / 50:.2f}); "
          f"arrays {'met' if total_core <= 50 else 'NOT met'} (ratio {total_core / 50:.2f})")


if __name__ == "__main__":
    main()
