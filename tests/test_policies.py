import numpy as np
import pytest

from eebench.policies import POLICIES, entropy, exit_summary, first_layer_where, max_prob


def _logits_from_probs(probs):
    return np.log(np.asarray(probs, dtype=np.float64))


def test_entropy_is_stable_and_correct():
    p = np.array([0.25, 0.75])
    assert entropy(np.log(p)) == pytest.approx(-(p * np.log(p)).sum())
    assert entropy(np.array([1e4, -1e4])) == pytest.approx(0.0, abs=1e-12)  # no overflow / nan
    assert entropy(np.zeros(4)) == pytest.approx(np.log(4))


def test_entropy_exits_on_hand_built_trace():
    # 3 examples x 3 layers x 2 classes; entropies of (0.5,0.5)=0.693, (0.9,0.1)=0.325, (0.99,0.01)=0.056
    flat, mid, sure = [0.5, 0.5], [0.9, 0.1], [0.99, 0.01]
    logits = _logits_from_probs([[sure, flat, flat], [flat, mid, sure], [flat, flat, flat]])
    ent = POLICIES["entropy"]
    exits = ent.exits(logits, [0.0, 0.1, 0.4, 1.0])
    assert exits.tolist() == [
        [3, 3, 3],  # threshold 0: nothing is below, all exit at the last layer
        [1, 3, 3],  # only the (0.99, 0.01) layer is below 0.1; example 2's is the last layer
        [1, 2, 3],
        [1, 1, 1],  # everything is below 1.0
    ]


def test_max_prob_exits_and_last_layer_always_exits():
    flat, mid, sure = [0.5, 0.5], [0.9, 0.1], [0.99, 0.01]
    logits = _logits_from_probs([[mid, sure, flat], [flat, flat, flat]])
    exits = POLICIES["max_prob"].exits(logits, [0.95, 0.89, 0.5, 1.01])
    assert exits.tolist() == [[2, 3], [1, 3], [1, 1], [3, 3]]
    assert max_prob(np.log(np.array([0.2, 0.8]))) == pytest.approx(0.8)


def test_first_layer_where():
    ok = np.array([[False, True, True], [False, False, False]])
    assert first_layer_where(ok).tolist() == [2, 4]


def test_exit_summary_definitions():
    s = exit_summary(np.array([1, 2, 3, 6]), n_layers=6)
    assert s["mean_exit_layer"] == 3.0
    assert s["time_pct"] == 50.0
    assert s["speedup"] == 2.0
    assert s["histogram"] == [1, 1, 1, 0, 0, 1]


def test_sweep_is_monotone_for_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 6, 3)) * np.arange(1, 7)[None, :, None]
    exits = POLICIES["entropy"].exits(logits, np.linspace(0, 1.2, 30))
    means = exits.mean(1)
    assert np.all(np.diff(means) <= 1e-12)  # a higher threshold never exits later
