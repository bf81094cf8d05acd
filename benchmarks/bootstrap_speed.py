"""How long the bootstrap intervals take on a stored trace of 10,000 examples × 12 exits.

    python benchmarks/bootstrap_speed.py [--n 10000] [--layers 12] [--resamples 1000] [--repeat 3]

Times (best of --repeat) eebench.intervals on a synthetic binary trace: the layer-wise intervals (every
exit's accuracy and F1) and one operating point's intervals (accuracy, F1 and time%), then the same
operating point by a direct resampling loop (scikit-learn per resample, 50 resamples, scaled to the
count asked for) for comparison. Target: layer-wise + operating point <= 1 s at 1,000 resamples on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from eebench.intervals import layerwise_intervals, point_intervals
from eebench.maths.bootstrap import draws
from eebench.metrics import METRICS
from eebench.trace_data import Trace


def synthetic_trace(n: int, layers: int, seed: int = 0) -> tuple[Trace, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, layers, 2)).astype(np.float32)
    logits[np.arange(n), :, labels] += np.linspace(0.2, 2.0, layers, dtype=np.float32)
    exits = rng.integers(1, layers + 1, n)
    return Trace("dev", "bench", np.arange(n).astype(str), logits, labels, False), exits


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    trace, exits = synthetic_trace(a.n, a.layers)
    metrics = ("acc", "f1")
    t_layers = best_of(lambda: layerwise_intervals(trace, metrics, a.resamples), a.repeat)
    t_point = best_of(lambda: point_intervals(trace, exits, metrics, a.resamples), a.repeat)
    preds = trace.logits[np.arange(a.n), exits - 1].argmax(-1)
    loop_n = 50
    t0 = time.perf_counter()
    for index in draws(a.n, loop_n, 0):
        for m in metrics:
            METRICS[m](preds[index], trace.labels[index])
    t_loop = (time.perf_counter() - t0) * a.resamples / loop_n
    print(f"trace {a.n} x {a.layers}, {a.resamples} resamples, best of {a.repeat}:")
    print(f"  layer-wise intervals (acc, F1 of all {a.layers} exits): {t_layers:.3f} s")
    print(f"  operating point intervals (acc, F1, time%):          {t_point:.3f} s")
    print(f"  both:                                                 {t_layers + t_point:.3f} s (target <= 1 s)")
    print(f"  one operating point by a direct loop (scikit-learn per resample, from {loop_n}): "
          f"{t_loop:.1f} s = {t_loop / t_point:.0f}x the vectorised")


if __name__ == "__main__":
    main()
