"""Operating points with a guarantee (Learn-then-Test, eebench.guarantee): over 1,000 random calibration
halves of a trace, the chosen setting's disagreement with the full model on the whole trace (the
population) exceeds eps in at most delta of the draws (plus binomial slack), for the fixture trace of a
trained model and a simulated one; the point-estimate choice does not have that property."""

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from eebench.guarantee import lt_test, per_example_losses
from eebench.maths.ltt import binomial_p, fixed_sequence, hoeffding_bentkus_p
from eebench.policies import POLICIES
from eebench.trace_data import Trace, load_trace

FIXTURE = Path(__file__).parent / "fixtures" / "traces" / "quickstart_dev_test.npz"
DRAWS = 1000


def simulated_trace(n=1500, layers=6, seed=0) -> Trace:
    """Exits grow more accurate with depth; confidence tracks correctness loosely, as real exits do."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    skill = rng.normal(size=n)[:, None] + np.linspace(-0.5, 2.0, layers)[None, :]
    logits = np.zeros((n, layers, 2), dtype=np.float32)
    margin = skill + rng.normal(scale=1.0, size=(n, layers))
    logits[np.arange(n), :, labels] = margin
    return Trace("dev", "sim", np.arange(n).astype(str), logits, labels, False)


def coverage(trace: Trace, policy_name: str, eps: float, delta: float, draws: int = DRAWS, seed: int = 0):
    """Violation rates of the guaranteed and the point-estimate choices over random calibration halves."""
    policy = POLICIES[policy_name]
    settings = policy.ordered(trace.num_layers, trace.logits.shape[-1], trace.regression)
    exits = policy.exits(trace, settings)
    loss = per_example_losses(trace, exits)  # Shape: [T, N]
    population = loss.mean(1)  # each setting's true risk
    n = loss.shape[1]
    m = n // 2
    rng = np.random.default_rng(seed)
    pick = np.zeros((n, draws))
    for d in range(draws):
        pick[rng.permutation(n)[:m], d] = 1.0
    errors = loss @ pick  # Shape: [T, draws]: each setting's losses on each calibration half
    p = binom.cdf(errors.round(), m, eps)
    time_pct = 100.0 * exits.mean(1) / trace.num_layers
    guaranteed, naive = [], []
    for d in range(draws):
        k = fixed_sequence(p[:, d], delta)
        guaranteed.append(k > 0 and population[k - 1] > eps)
        ok = np.flatnonzero(errors[:, d] / m <= eps)
        if len(ok):
            naive.append(population[ok[np.argmin(time_pct[ok])]] > eps)
    return float(np.mean(guaranteed)), float(np.mean(naive)), population


@pytest.mark.parametrize("source", ["fixture", "simulated"])
def test_the_guaranteed_setting_violates_eps_at_most_delta_of_the_time(source):
    trace = load_trace(FIXTURE) if source == "fixture" else simulated_trace()
    eps, delta = 0.05, 0.1
    slack = 3 * np.sqrt(delta * (1 - delta) / DRAWS)
    for policy in ("entropy", "max_prob", "pcee", "patience"):
        rate, naive, population = coverage(trace, policy, eps, delta)
        assert population.min() <= eps < population.max(), (policy, population.min(), population.max())
        assert rate <= delta + slack, (source, policy, rate)
        if policy != "patience":  # dense grids: the point estimate sits right at eps and exceeds it often
            assert naive > delta + slack, (source, policy, naive)


def test_a_point_estimate_that_violates_eps_where_the_guarantee_does_not():
    """One calibration half where the point-estimate setting's true disagreement exceeds eps while the
    guaranteed setting's does not."""
    trace = simulated_trace()
    policy = POLICIES["entropy"]
    eps, delta = 0.05, 0.1
    rng = np.random.default_rng(3)
    settings = policy.ordered(trace.num_layers, 2)
    population = per_example_losses(trace, policy.exits(trace, settings)).mean(1)
    for _ in range(50):
        half = np.sort(rng.permutation(len(trace.ids))[: len(trace.ids) // 2])
        calib = Trace("dev", "h", trace.ids[half], trace.logits[half], trace.labels[half], False)
        found = lt_test(calib, policy, eps, delta)
        if found["point_estimate"] is not None and population[found["point_estimate"]] > eps:
            break
    else:
        pytest.fail("no calibration half where the point estimate violates eps")
    assert found["chosen"] is not None and population[found["chosen"]] <= eps
    assert found["time_pct"][found["chosen"]] > found["time_pct"][found["point_estimate"]]  # what it gives up


def test_p_values_and_fixed_sequence():
    assert binomial_p(np.array([0]), 100, 0.05)[0] == pytest.approx(0.95**100)
    hb = hoeffding_bentkus_p(np.array([0.0, 0.02, 0.05, 0.3]), 1000, 0.05)
    assert hb[0] < 1e-10 and hb[1] < 0.01 and hb[2] == 1.0 and hb[3] == 1.0
    assert fixed_sequence(np.array([0.01, 0.02, 0.5, 0.01]), 0.1) == 2  # stops at the first failure
    assert fixed_sequence(np.array([0.5, 0.01]), 0.1) == 0


def test_every_ordered_policy_goes_from_late_to_early_exits():
    trace = simulated_trace(n=300)
    for name, policy in POLICIES.items():
        if policy.ordered is None or policy.needs:
            continue
        settings = policy.ordered(trace.num_layers, 2, False)
        mean_exit = policy.exits(trace, settings).mean(1)
        assert np.all(np.diff(mean_exit) <= 1e-12), name  # conservative first, never later after
