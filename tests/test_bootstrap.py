"""Bootstrap intervals (eebench.maths.bootstrap, eebench.intervals): the vectorised resamples give what a
direct resampling loop with scikit-learn / scipy gives (same seed, same numbers), agree with the normal
approximation on a large split, and reach the records and reports."""

import numpy as np
import pytest

from eebench.intervals import layerwise_intervals, point_intervals, shown
from eebench.maths.bootstrap import BOOTSTRAP, counts, draws, interval
from eebench.metrics import METRICS
from eebench.trace_data import Trace


def _data(n=150, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.8, y, 1 - y)
    y3 = rng.integers(0, 3, n)
    p3 = np.where(rng.random(n) < 0.7, y3, rng.integers(0, 3, n))
    yr = rng.normal(size=n).round(1)  # rounded: ties, as real STS-B scores have
    pr = (yr + rng.normal(size=n)).round(1)
    return (p, y), (p3, y3), (pr, yr)


@pytest.mark.parametrize("name", list(BOOTSTRAP))
def test_vectorised_resamples_equal_a_direct_resampling_loop(name):
    binary, multi, regression = _data()
    cases = {"pearson": [regression], "spearman": [regression], "mcc": [binary, multi]}.get(name, [binary])
    w, index = counts(150, 60, seed=7), draws(150, 60, seed=7)
    for preds, labels in cases:
        fast = BOOTSTRAP[name](w, preds, labels)
        direct = np.array([100.0 * METRICS[name](preds[i], labels[i]) for i in index])
        np.testing.assert_allclose(fast, direct, atol=1e-9, equal_nan=True)


def test_several_exits_at_once_equal_one_at_a_time():
    (p, y), _, (pr, yr) = _data()
    w = counts(150, 40, seed=3)
    both = BOOTSTRAP["acc"](w, np.stack([p, 1 - p], 1), y)
    np.testing.assert_allclose(both[:, 1], BOOTSTRAP["acc"](w, 1 - p, y))
    rank = BOOTSTRAP["spearman"](w, np.stack([pr, yr], 1), yr)
    np.testing.assert_allclose(rank[:, 0], BOOTSTRAP["spearman"](w, pr, yr))


def test_accuracy_interval_agrees_with_the_normal_approximation_on_a_large_split():
    rng = np.random.default_rng(0)
    n, rate = 20000, 0.85
    labels = rng.integers(0, 2, n)
    preds = np.where(rng.random(n) < rate, labels, 1 - labels)
    low, high = interval(BOOTSTRAP["acc"](counts(n, 1000, 0), preds, labels))
    acc = 100 * np.mean(preds == labels)
    half = 100 * 1.96 * np.sqrt(acc / 100 * (1 - acc / 100) / n)
    assert low < acc < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_the_mrpc_example_of_the_docs():
    """MRPC dev: 408 pairs at 85% accuracy: a 95% interval of about ±3.5 points."""
    labels = np.r_[np.ones(279), np.zeros(129)].astype(int)
    preds = labels.copy()
    preds[:61] = 0  # 347 / 408 = 85.05% correct
    low, high = interval(BOOTSTRAP["acc"](counts(408), preds, labels))
    assert 3.0 < (high - low) / 2 < 4.0


def test_operating_point_and_layerwise_intervals_from_a_trace():
    rng = np.random.default_rng(0)
    n, layers = 400, 4
    labels = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, layers, 2))
    logits[np.arange(n), :, labels] += np.linspace(0.2, 2.0, layers)  # later exits more accurate
    trace = Trace("dev", "k", np.arange(n).astype(str), logits.astype(np.float32), labels, False)
    exits = rng.integers(1, layers + 1, n)
    got = point_intervals(trace, exits, ("acc", "f1"), 500)
    assert set(got) == {"time_pct", "acc", "f1"}
    time_pct = 100 * exits.mean() / layers
    assert got["time_pct"][0] < time_pct < got["time_pct"][1]
    rows = layerwise_intervals(trace, ("acc",), 500)
    accs = [100 * np.mean(logits[:, i].argmax(-1) == labels) for i in range(layers)]
    assert all(r["acc_lo"] < a < r["acc_hi"] for r, a in zip(rows, accs))
    assert point_intervals(trace, exits, ("acc",), 0) == {} and layerwise_intervals(trace, ("acc",), 0)[0] == {}
    assert shown(84.94, 83.71, 86.12) == "84.9 [83.7, 86.1]" and shown(84.94, None, None) == "84.9"
