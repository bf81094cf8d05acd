"""The real early-exit engine: its exits equal the trace simulation for every eligible policy."""

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

from eebench.calibration import exit_predictions
from eebench.data.encode import encode, eval_loader
from eebench.data.synthetic import build_tokenizer, generate
from eebench.engine import EarlyExitEngine
from eebench.errors import UserError
from eebench.policies.signals import entropy, max_prob, row_signal
from eebench.maths.flops import exit_macs, head_macs, layer_macs
from eebench.model import MultiExitModel
from eebench.policies import POLICIES
from eebench.recipe import SyntheticConfig
from eebench.trace_data import Trace, compute_signals

EXTRA = {  # settings beyond each policy's own dense grid
    "entropy": [{"threshold": [0.2, 0.5, 0.6, 0.62, 0.65]}],  # per layer
}


def _settings(policy, trace, k: int = 5) -> list[dict]:
    """k settings spread over the policy's own dense grid for this trace (its extremes included)."""
    grid = policy.fine_grid(trace)
    return [grid[i] for i in sorted(set(np.linspace(0, len(grid) - 1, k).round().astype(int)))] + EXTRA.get(policy.name, [])


def _random_model_and_trace(tmp, num_labels: int, seed: int, scale: float, n: int):
    """A 6-layer random BERT with LTE head, its heads' confidence spread (scale) so every policy exits
    somewhere, synthetic dev examples and their trace (regression when num_labels = 1)."""
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model("bert", hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                               intermediate_size=64, vocab_size=64, max_position_embeddings=64)
    model = MultiExitModel(AutoModel.from_config(cfg), num_labels=num_labels, pooling="mean", lte=True).eval()
    with torch.no_grad():
        for head in model.heads:
            head.classifier.weight.mul_(scale)
    ex = generate(SyntheticConfig(n_dev=n), "dev")
    data = encode(build_tokenizer(tmp), ex, 48)
    signals = compute_signals(model, eval_loader(data, 32), torch.device("cpu"))
    regression = num_labels == 1
    labels = np.asarray(ex.labels, dtype=np.float64) if regression else ex.labels
    trace = Trace("dev", "k", np.asarray(ex.ids), signals["logits"], labels, regression, signals["lte"], signals["cka"])
    return model, data, trace


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return _random_model_and_trace(tmp_path_factory.mktemp("tok"), num_labels=2, seed=0, scale=8.0, n=150)


def _engine_matches(model, data, trace, policy, batch_size, regression=False):
    settings = _settings(POLICIES[policy], trace)
    simulated = POLICIES[policy].exits(trace, settings)
    n = len(data)
    for setting, expected in zip(settings, simulated):
        engine = EarlyExitEngine(model, policy, setting, regression)
        got = np.zeros(n, dtype=np.int64)
        preds = np.zeros(n, dtype=np.float64 if regression else np.int64)
        for start in range(0, n, batch_size):
            batch = data.collate([data[i] for i in range(start, min(n, start + batch_size))])
            index = batch.pop("index").numpy()
            batch.pop("labels")
            exits, logits = engine.run(batch)
            got[index], preds[index] = exits, (logits[:, 0] if regression else logits.argmax(-1)).numpy()
        assert (got == expected).all(), (policy, setting, np.flatnonzero(got != expected)[:5])
        if regression:
            assert np.allclose(preds, exit_predictions(trace, expected), atol=1e-5)
        else:
            assert (preds == exit_predictions(trace, expected)).all()
    assert len(set(simulated.ravel().tolist())) > 1  # the settings exercise early exits


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("batch_size", [1, 16])
def test_engine_exits_equal_the_trace_simulation(setup, policy, batch_size):
    """Every registered policy's online step against its offline exits, on classification."""
    model, data, trace = setup
    if not POLICIES[policy].serves(regression=False):
        pytest.skip(f"{policy} serves regression only")
    _engine_matches(model, data, trace, policy, batch_size)


@pytest.fixture(scope="module")
def regression_setup(tmp_path_factory):
    return _random_model_and_trace(tmp_path_factory.mktemp("tok"), num_labels=1, seed=1, scale=4.0, n=120)


@pytest.mark.parametrize("policy", [name for name, p in POLICIES.items() if p.serves(regression=True)])
def test_engine_exits_equal_the_trace_simulation_on_regression(regression_setup, policy):
    model, data, trace = regression_setup
    _engine_matches(model, data, trace, policy, 16, regression=True)


def test_engine_refuses_a_policy_the_task_type_does_not_allow(regression_setup):
    model, *_ = regression_setup
    with pytest.raises(UserError, match="does not apply to regression tasks"):
        EarlyExitEngine(model, "entropy", {"threshold": 0.1}, regression=True)


def test_full_model_baseline_matches_the_last_exit(setup):
    model, data, _ = setup
    batch = data.collate([data[i] for i in range(4)])
    batch.pop("index"), batch.pop("labels")
    engine = EarlyExitEngine(model, "static", {"layer": 6})
    with torch.no_grad():
        expected = model(**batch).logits[:, -1]
    assert torch.allclose(engine.run_full(batch), expected, atol=1e-5)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_engine_heads_compute_what_the_exit_heads_compute(setup, pooling):
    model, _, _ = setup
    model.heads[2].pooling = pooling
    try:
        engine = EarlyExitEngine(model, "static", {"layer": 6})
        torch.manual_seed(1)
        hidden = torch.randn(3, 7, 32)
        for mask in (torch.ones(3, 7, dtype=torch.long), torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])):
            padded = bool((mask == 0).any())
            with torch.no_grad():
                want_logits, want_pooled = model.heads[2](hidden, mask)
            logits, pooled = engine._head(3, hidden, mask, padded)
            assert torch.allclose(logits, want_logits, atol=1e-6) and torch.allclose(pooled, want_pooled, atol=1e-6)
    finally:
        model.heads[2].pooling = "mean"


def test_one_row_signals_equal_the_policies_signals():
    logits = np.random.default_rng(0).normal(scale=4.0, size=(50, 3)).astype(np.float32)
    for name, fn in (("entropy", entropy), ("max_prob", max_prob)):
        want = fn(logits)
        got = np.array([row_signal(name, row.tolist()) for row in logits])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_macs_formula():
    # BERT-base at 128 tokens: 12 layers ≈ 11.2 G MACs (the usual ~22 GFLOPs)
    per_layer = layer_macs(np.array([128]), 768, 3072)[0]
    assert per_layer == 128 * (4 * 768**2 + 2 * 768 * 3072) + 2 * 128**2 * 768
    assert 10.5e9 < 12 * per_layer < 11.5e9
    m = exit_macs(np.array([6, 12]), np.array([128, 128]), 12, 768, 3072, 2)
    assert m["macs_backbone"] == pytest.approx(9 * per_layer)
    assert m["macs_heads"] == pytest.approx(9 * head_macs(768, 2))
    assert m["flops"] == pytest.approx(2 * m["macs"])
    assert m["macs_full_model"] == pytest.approx(12 * per_layer + head_macs(768, 2))
