import numpy as np
import pytest

from eebench.errors import UserError
from eebench.policies import POLICIES, exit_summary, first_layer_where
from eebench.policies.cka import cka_counts
from eebench.policies.signals import entropy, max_prob, run_lengths
from eebench.trace_data import Trace

FLAT, MID, SURE = [0.5, 0.5], [0.9, 0.1], [0.99, 0.01]


def _trace(probs=None, logits=None, lte=None, cka=None, regression=False):
    if logits is None:
        logits = np.log(np.asarray(probs, dtype=np.float64))
    n = logits.shape[0]
    return Trace("dev", "k", np.arange(n).astype(str), logits, None, regression, lte, cka)


def _t(values, key="threshold"):
    return [{key: v} for v in values]


def test_entropy_is_stable_and_correct():
    p = np.array([0.25, 0.75])
    assert entropy(np.log(p)) == pytest.approx(-(p * np.log(p)).sum())
    assert entropy(np.array([1e4, -1e4])) == pytest.approx(0.0, abs=1e-12)  # no overflow / nan
    assert entropy(np.zeros(4)) == pytest.approx(np.log(4))


def test_entropy_exits_on_hand_built_trace():
    # entropies: (0.5,0.5)=0.693, (0.9,0.1)=0.325, (0.99,0.01)=0.056
    trace = _trace([[SURE, FLAT, FLAT], [FLAT, MID, SURE], [FLAT, FLAT, FLAT]])
    exits = POLICIES["entropy"].exits(trace, _t([0.0, 0.1, 0.4, 1.0]))
    assert exits.tolist() == [
        [3, 3, 3],  # threshold 0: nothing is below, all exit at the last layer
        [1, 3, 3],  # only the (0.99, 0.01) layer is below 0.1; example 2's is the last layer
        [1, 2, 3],
        [1, 1, 1],  # everything is below 1.0
    ]
    # per-layer thresholds: layer 1 needs < 0.01, layer 2 < 0.4
    assert POLICIES["entropy"].exits(trace, _t([[0.01, 0.4]])).tolist() == [[3, 2, 3]]


def test_max_prob_exits_and_last_layer_always_exits():
    trace = _trace([[MID, SURE, FLAT], [FLAT, FLAT, FLAT]])
    exits = POLICIES["max_prob"].exits(trace, _t([0.95, 0.89, 0.5, 1.01]))
    assert exits.tolist() == [[2, 3], [1, 3], [1, 1], [3, 3]]
    assert max_prob(np.log(np.array([0.2, 0.8]))) == pytest.approx(0.8)


def test_patience_on_hand_built_trace():
    # predictions per layer: ex0: 0 0 0 0 ; ex1: 0 1 1 0 ; ex2: 1 0 1 0
    a, b = [0.9, 0.1], [0.1, 0.9]
    trace = _trace([[a, a, a, a], [a, b, b, a], [b, a, b, a]])
    exits = POLICIES["patience"].exits(trace, _t([1, 2, 3], "patience"))
    assert exits.tolist() == [[2, 3, 4], [3, 4, 4], [4, 4, 4]]
    assert run_lengths(np.array([[False, True, True, False, True]])).tolist() == [[0, 1, 2, 0, 1]]


def test_patience_regression_uses_delta():
    values = np.array([[[1.0], [1.05], [2.0], [2.01]]])
    trace = _trace(logits=values, regression=True)
    patience = POLICIES["patience"]
    assert patience.exits(trace, [{"patience": 1, "delta": 0.1}]).tolist() == [[2]]
    assert patience.exits(trace, [{"patience": 1, "delta": 0.02}]).tolist() == [[4]]  # |2.0−1.05| ≥ δ too
    # PABEE's default δ = 0 (run_glue.py --regression_threshold): |Δ| < 0 never holds, no early exit
    assert patience.exits(trace, [{"patience": 1}]).tolist() == [[4]]
    grid = patience.default_grid(4, regression=True)
    assert {s["delta"] for s in grid} == {0.05, 0.1, 0.2, 0.5} and {s["patience"] for s in grid} == {1, 2, 3}
    assert all("delta" not in s for s in patience.default_grid(4))  # classification ignores δ


def test_patience_zero_means_no_early_exit_as_in_pabee():
    """PABEE's BertModel: `elif self.patience == 0: # Use all layers for inference`."""
    trace = _trace([[MID, MID, MID, MID], [SURE, SURE, MID, FLAT]])
    assert POLICIES["patience"].exits(trace, _t([0, 1], "patience")).tolist() == [[4, 4], [2, 2]]


@pytest.mark.parametrize("name", ["entropy", "max_prob", "pcee"])
def test_confidence_policies_refuse_regression(name):
    trace = _trace(logits=np.array([[[1.0], [1.05], [2.0], [2.01]]]), regression=True)
    with pytest.raises(UserError, match=f"exit policy '{name}' does not apply to regression tasks") as err:
        POLICIES[name].exits(trace, POLICIES[name].default_grid(4, regression=True)[:1])
    serving = ", ".join(p.name for p in POLICIES.values() if p.serves(True))  # from the registry
    assert str(err.value).endswith(f"use one of: {serving}") and "\n" not in str(err.value)


def test_registry_declares_task_types():
    for policy in POLICIES.values():
        assert policy.tasks and set(policy.tasks) <= {"classification", "regression"}
        assert callable(policy.step) and policy.params
        assert set(policy.defaults) <= set(policy.params)


def test_pcee_needs_a_run_of_confident_layers():
    trace = _trace([[SURE, MID, SURE, SURE, FLAT], [SURE, SURE, FLAT, FLAT, FLAT]])
    settings = [{"patience": 2, "threshold": 0.95}, {"patience": 1, "threshold": 0.95},
                {"patience": 2, "threshold": 0.85}]
    assert POLICIES["pcee"].exits(trace, settings).tolist() == [[4, 2], [1, 1], [2, 2]]


def test_lte_policy_and_missing_signal():
    trace = _trace([[FLAT] * 3, [FLAT] * 3], lte=np.array([[0.2, 0.9, 0.1], [0.1, 0.2, 0.3]]))
    assert POLICIES["lte"].exits(trace, _t([0.5, 0.15])).tolist() == [[2, 3], [1, 2]]
    with pytest.raises(UserError, match="lte"):
        POLICIES["lte"].exits(_trace([[FLAT] * 3]), _t([0.5]))


def test_cka_counts_and_exits():
    # sims s1..s4 (5 layers); differences s2-s1, s3-s2, s4-s3 known after layers 3, 4, 5
    sims = np.array([[0.5, 0.9, 0.92, 0.93], [0.5, 0.6, 0.7, 0.8]])
    assert cka_counts(sims, 0.06).tolist() == [[0, 0, 0, 1, 2], [0, 0, 0, 0, 0]]
    trace = _trace([[FLAT] * 5] * 2, cka=sims)
    settings = [{"theta": 0.06, "count": 1}, {"theta": 0.06, "count": 2}, {"theta": 0.5, "count": 1}]
    assert POLICIES["cka"].exits(trace, settings).tolist() == [[4, 5], [5, 5], [3, 3]]


def test_static():
    trace = _trace([[FLAT] * 4] * 3)
    assert POLICIES["static"].exits(trace, _t([2, 9], "layer")).tolist() == [[2, 2, 2], [4, 4, 4]]


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
    exits = POLICIES["entropy"].exits(_trace(logits=logits), _t(np.linspace(0, 1.2, 30)))
    assert np.all(np.diff(exits.mean(1)) <= 1e-12)  # a higher threshold never exits later


def test_candidate_thresholds_never_tie_with_observed_values():
    rng = np.random.default_rng(1)
    trace = _trace(logits=rng.normal(size=(300, 4, 2)))
    ent = entropy(trace.logits)[:, :-1].ravel()
    for setting in POLICIES["entropy"].candidates(trace):
        assert not np.any(ent == setting["threshold"])


@pytest.mark.parametrize("policy,settings", [
    ("entropy", [{"threshold": t} for t in np.linspace(0, 0.8, 25)]),
    ("max_prob", [{"threshold": t} for t in np.linspace(0.5, 1.0, 25)]),
    ("lte", [{"threshold": t} for t in np.linspace(0, 1, 25)]),
    ("patience", [{"patience": p} for p in range(1, 6)]),
    ("pcee", [{"patience": p, "threshold": t} for p in (1, 2, 3) for t in (0.6, 0.8, 0.95)]),
    ("cka", [{"theta": th, "count": r} for th in (-0.02, 0.0, 0.05) for r in (1, 2, 3)]),
])
def test_fast_sweep_equals_the_direct_computation(policy, settings):
    from eebench.calibration import exit_predictions, sweep
    from eebench.data.tasks import get_task

    rng = np.random.default_rng(3)
    n, L = 400, 6
    labels = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, L, 2)) * np.linspace(0.5, 3, L)[None, :, None]
    trace = Trace("dev", "k", np.arange(n).astype(str), logits, labels, False,
                  rng.uniform(size=(n, L)), np.clip(0.8 + np.cumsum(rng.normal(0, 0.03, (n, L - 1)), 1), 0, 1))
    table = sweep(trace, get_task("sst2"), POLICIES[policy], settings)
    exits = POLICIES[policy].exits(trace, settings)
    for k, e in enumerate(exits):
        assert table["mean_exit_layer"][k] == pytest.approx(e.mean())
        assert table["acc"][k] == pytest.approx(100 * (exit_predictions(trace, e) == labels).mean())
        assert json.loads(table["histogram"][k]) == np.bincount(e, minlength=L + 1)[1:].tolist()


import json  # noqa: E402


def test_pareto_front_and_area():
    import pandas as pd

    from eebench.report.pareto import area_under_curves, pareto_front

    pts = pd.DataFrame({"policy": ["a", "a", "a", "b", "b"], "setting": ["1", "2", "3", "1", "2"],
                        "metric": [80.0, 85.0, 84.0, 90.0, 70.0], "time_pct": [30.0, 60.0, 70.0, 100.0, 30.0]})
    front = pareto_front(pts)
    assert list(zip(front["policy"], front["time_pct"])) == [("a", 30.0), ("a", 60.0), ("b", 100.0)]
    auc = area_under_curves(pts).set_index("policy")
    # common range 30..100; policy a reaches 80 until 60%, then 85: mean = (80·30 + 85·40)/70
    assert auc.loc["a", "auc_mean_metric"] == pytest.approx((80 * 30 + 85 * 40) / 70, abs=0.2)
    assert auc.loc["b", "best_metric_at_50pct_time"] == 70.0


def test_vectorised_cka_exits_equal_the_count_definition():
    rng = np.random.default_rng(3)
    for n_layers in (2, 3, 4, 12):
        sims = rng.uniform(0.5, 1.0, (50, n_layers - 1))
        trace = _trace(logits=rng.normal(size=(50, n_layers, 2)), cka=sims)
        settings = [{"theta": th, "count": r} for th in (-0.1, 0.0, 0.06, 0.3) for r in range(0, n_layers + 1)]
        got = POLICIES["cka"].exits(trace, settings)
        for k, s in enumerate(settings):
            counts = cka_counts(sims, s["theta"])[:, :-1]  # layers 1..L-1
            expected = first_layer_where(counts >= s["count"])
            assert got[k].tolist() == expected.tolist(), (n_layers, s)


@pytest.mark.parametrize("name", [n for n, p in POLICIES.items() if p.row_step is not None])
def test_row_step_equals_the_batched_step_and_the_trace(name):
    """The engine's one-row decision (Policy.row_step) against the batched step and the offline exits."""
    import torch

    from eebench.policies import LayerView

    policy = POLICIES[name]
    logits = np.random.default_rng(3).normal(scale=3.0, size=(40, 4, 3))  # [N, L, C]
    trace = _trace(logits=logits)
    settings = policy.fine_grid(trace, 12)[:6] + [{"threshold": [0.3, 0.5, 0.9]}]
    exits = policy.exits(trace, settings)
    for s, setting in enumerate(settings):
        for n in range(len(logits)):
            row_exit = next(i for i in range(1, 5) if i == 4 or policy.row_step(setting, i, logits[n, i - 1].tolist()))
            assert row_exit == exits[s, n], (setting, n)
        for i in range(1, 4):
            view = LayerView(i, 4, torch.as_tensor(logits[:, i - 1]), None, None, None, None, False)
            want = policy.step(setting, view, {})
            got = [policy.row_step(setting, i, row.tolist()) for row in logits[:, i - 1]]
            assert got == want.tolist()
