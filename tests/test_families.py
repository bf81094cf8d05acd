"""Every encoder family end to end (random configs, CPU): the stepped layers equal the model's own
forward, the engine's exits and logits equal the trace for every policy at batch 1 and 16 with padding,
finetune → trace → calibrate → evaluate → speed through the CLI, and FLOPs per family against
torch.utils.flop_counter on the real modules."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel
from typer.testing import CliRunner

from eebench.cli import app
from eebench.data.encode import encode, eval_loader
from eebench.data.synthetic import VOCAB, build_tokenizer, generate
from eebench.engine import EarlyExitEngine
from eebench.calibration import exit_predictions
from eebench.model import MultiExitModel
from eebench.model.families import family_of, shape_config
from eebench.policies import POLICIES
from eebench.recipe import SyntheticConfig
from eebench.trace_data import Trace, compute_signals

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["bert", "roberta", "xlm-roberta", "electra", "albert", "distilbert", "deberta-v2", "modernbert", "mpnet",
         "llama", "qwen2", "gpt2"]


def tiny(model_type: str, layers: int = 4, **extra):
    return AutoConfig.for_model(model_type, **shape_config(model_type, hidden=32, layers=layers, heads=4,
                                                           intermediate=64, vocab=len(VOCAB) + 8, positions=64,
                                                           **extra))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("model_type", TYPES)
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_stepped_layers_equal_the_models_own_forward(model_type, padding_side):
    """Layer i as eebench steps it is layer i of the model's own forward (last layer after the final norm);
    decoders count positions from each row's first real token, so either padding side gives one answer."""
    torch.manual_seed(0)
    backbone = AutoModel.from_config(tiny(model_type)).eval()
    family = family_of(backbone.config)
    ids = torch.randint(5, len(VOCAB), (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 8:], mask[2, 3:] = 0, 0
    if padding_side == "left" and family.decoder:
        ids, mask = torch.stack([r.roll(int((m == 0).sum())) for r, m in zip(ids, mask)]), mask.flip(-1)
    model = MultiExitModel(backbone, 2).eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
        for row in range(3):  # each row alone, unpadded: the model's own forward
            real = mask[row].bool()
            alone = backbone(input_ids=ids[row:row + 1, real], output_hidden_states=True)
            want = alone.last_hidden_state
            got = model.heads[-1].pool(want, torch.ones(1, int(real.sum()), dtype=torch.long))
            assert torch.allclose(out.pooled[row, -1], got[0], atol=1e-5), (model_type, row)


def _random_model_and_trace(model_type: str, tokenizer, n: int = 64):
    torch.manual_seed(0)
    model = MultiExitModel(AutoModel.from_config(tiny(model_type)), num_labels=2, pooling="first", lte=True).eval()
    with torch.no_grad():  # spread the heads' confidence so every policy exits somewhere
        for head in model.heads:
            head.classifier.weight.mul_(20.0)
    ex = generate(SyntheticConfig(n_dev=n), "dev")
    data = encode(tokenizer, ex, 48)
    signals = compute_signals(model, eval_loader(data, 32), torch.device("cpu"))
    trace = Trace("dev", "k", np.asarray(ex.ids), signals["logits"], ex.labels, False, signals["lte"], signals["cka"])
    return model, data, trace


def _settings(policy, trace, k: int = 3) -> list[dict]:
    grid = policy.fine_grid(trace)
    return [grid[i] for i in sorted(set(np.linspace(0, len(grid) - 1, k).round().astype(int)))]


@pytest.mark.parametrize("model_type", TYPES)
def test_engine_equals_the_trace_for_every_policy(model_type, tokenizer):
    """For every classification policy: exits and logits of the engine at batch 1 and at batch 16 (with
    padding and row compaction) equal the trace's."""
    model, data, trace = _random_model_and_trace(model_type, tokenizer)
    n, early = len(data), set()
    for name, policy in POLICIES.items():
        if not policy.serves(regression=False):
            continue
        settings = _settings(policy, trace)
        simulated = policy.exits(trace, settings)
        for setting, expected in zip(settings, simulated):
            engine = EarlyExitEngine(model, name, setting)
            for batch_size in (1, 16):
                got, logits = np.zeros(n, dtype=np.int64), np.zeros((n, 2), dtype=np.float32)
                for start in range(0, n, batch_size):
                    batch = data.collate([data[i] for i in range(start, min(n, start + batch_size))])
                    index = batch.pop("index").numpy()
                    batch.pop("labels")
                    exits, out = engine.run(batch)
                    got[index], logits[index] = exits, out.numpy()
                assert (got == expected).all(), (model_type, name, setting, batch_size)
                want = trace.logits[np.arange(n), expected - 1]
                np.testing.assert_allclose(logits, want, atol=1e-4, err_msg=f"{model_type} {name} {batch_size}")
                assert (logits.argmax(-1) == exit_predictions(trace, expected)).all()
            early.update(expected.tolist())
    assert len(early) > 2, early  # the settings exercised early exits at several layers


# ----------------------------------------------------------------------------- through the CLI
CLI_TYPES = ["albert", "distilbert", "deberta-v2", "modernbert", "mpnet", "electra", "llama", "gpt2"]


def _finetune_args(tmp_path, model_type: str) -> list[str]:
    """`eebench finetune` on the quickstart recipe with this family's random model, joint training."""
    config = shape_config(model_type, hidden=32, layers=3, heads=2, intermediate=64, vocab=len(VOCAB) + 8,
                          positions=64)
    inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in config.items())
    sets = [f'model.name="{model_type}"', f"model.config={{ {inline} }}",
            "task.synthetic={ n_train = 160, n_dev = 48, n_test = 32, seed = 0 }",
            'train.strategy="joint"', "train.args={}", "train.epochs=1", "train.batch_size=16", "train.max_length=48",
            "train.eval_each_epoch=false", "exit.target_time_pct=60", f'output.root="{tmp_path}"',
            f'output.run_name="{model_type}"', 'output.evaluate_splits=["dev", "test"]', "output.report=false"]
    return ["finetune", str(ROOT / "recipes" / "quickstart.toml"), *[x for s in sets for x in ("--set", s)]]


@pytest.mark.parametrize("model_type", CLI_TYPES)
def test_every_family_finetunes_calibrates_evaluates_and_runs_the_engine(tmp_path, model_type):
    runner = CliRunner()
    result = runner.invoke(app, _finetune_args(tmp_path, model_type))
    assert result.exit_code == 0, result.output
    run = tmp_path / model_type
    assert (run / "calibration/entropy.json").is_file() and (run / "eval/test/operating_entropy.json").is_file()
    result = runner.invoke(app, ["speed", str(run), "--policy", "entropy", "--rounds", "1", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    record = json.loads((run / "eval/dev/speed_entropy.json").read_text())
    assert record["batch_1"]["agreement"] == 1.0 and record["batch_8"]["agreement"] == 1.0, record
    # the operating point's FLOPs come from the family's own layer formula
    from eebench.maths.flops import head_macs
    from eebench.trace_data import load_trace

    trace, config = load_trace(run / "traces/dev.npz"), AutoConfig.from_pretrained(run / "model")
    point = json.loads((run / "eval/dev/operating_entropy.json").read_text())
    family = family_of(config)
    want = family.layer_macs(config, trace.tokens).mean() * 3 + head_macs(32, 2)
    assert point["macs_full_model"] == pytest.approx(want), (point["macs_full_model"], want)


# ----------------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("model_type", TYPES)
def test_layer_macs_match_the_flop_counter_on_the_real_modules(model_type):
    """One layer's MACs from the family's formula against torch.utils.flop_counter on that layer, at two
    lengths (the T² attention term and the T-linear terms both checked)."""
    from torch.utils.flop_counter import FlopCounterMode

    # eager attention: the counter sees its matmuls (CPU's fused attention kernel has no FLOP rule)
    backbone = AutoModel.from_config(tiny(model_type, layers=2), attn_implementation="eager").eval()
    family = family_of(backbone.config)
    layers = family.layers(backbone)
    for t in (16, 40):
        ids = torch.randint(5, len(VOCAB), (1, t))
        with torch.no_grad():
            hidden, ctx = family.embed(backbone, input_ids=ids, attention_mask=torch.ones(1, t, dtype=torch.long))
            with FlopCounterMode(display=False) as counter:
                family.step(layers[1], 1, hidden, ctx)
        counted = counter.get_total_flops() / 2
        formula = float(family.layer_macs(backbone.config, np.array([t]))[0])
        assert formula == pytest.approx(counted, rel=0.02), (model_type, t, formula, counted)


# ----------------------------------------------------------------------------- model against tokenizer
@pytest.mark.parametrize("override, message", [
    ("model.config.vocab_size=20", "tokens but the model embeds only 20 (model.config.vocab_size)"),
    ("train.max_length=256", "train.max_length = 256 but the model's position table admits 64 tokens"),
])
def test_a_model_that_cannot_take_the_tokenizers_input_is_refused_before_training(tmp_path, override, message):
    """A tokenizer larger than the vocabulary, or max_length beyond the position table: one line, exit 2,
    before training, and no run folder left."""
    from conftest import ROOT, quickstart_overrides

    sets = [x for o in quickstart_overrides(tmp_path) + [override] for x in ("--set", o)]
    result = CliRunner().invoke(app, ["finetune", str(ROOT / "recipes" / "quickstart.toml"), *sets])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "qs").exists() and not list(tmp_path.glob("qs*"))


@pytest.mark.parametrize("model_type, where", [("bert", "pooler.dense"), ("roberta", "pooler.dense"),
                                               ("albert", "pooler"), ("mpnet", "pooler.dense")])
def test_exit_heads_start_from_the_checkpoints_pooler(model_type, where):
    torch.manual_seed(0)
    backbone = AutoModel.from_config(tiny(model_type))
    pooler = backbone.get_submodule(where)
    weight = pooler.weight.detach().clone()
    model = MultiExitModel(backbone, 2)
    assert all(torch.equal(head.dense.weight, weight) for head in model.heads)
    assert model.backbone.pooler is None  # the final exit plays the pooler's role


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_decoder_heads_pool_the_last_real_token(model_type):
    model = MultiExitModel(AutoModel.from_config(tiny(model_type)), 2, pooling="first")
    assert {head.pooling for head in model.heads} == {"last"}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_an_unpadded_mask_is_built_once_and_equals_the_builders(attn):
    """Eval mode remembers create_bidirectional_mask's answer for an unpadded batch (batch-1 serving pays
    the builder's Python once per length); a padded mask, or train mode, is built every time."""
    from transformers.masking_utils import create_bidirectional_mask

    from eebench.model.families import UNPADDED_MASKS

    UNPADDED_MASKS.clear()
    backbone = AutoModel.from_config(tiny("bert"), attn_implementation=attn).eval()
    family = family_of(backbone.config)
    ids = torch.randint(5, len(VOCAB), (2, 9))
    ones, padded = torch.ones(2, 9, dtype=torch.long), torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    built = {}
    with torch.no_grad():
        for name, mask in (("ones", ones), ("padded", padded)):
            got = [family.embed(backbone, input_ids=ids, attention_mask=mask)[1]["mask"] for _ in range(2)]
            hidden = backbone.embeddings(input_ids=ids)
            want = create_bidirectional_mask(config=backbone.config, inputs_embeds=hidden, attention_mask=mask)
            for g in got:
                assert (g is None and want is None) or torch.equal(g, want)
            built[name] = got[0]
    assert len(UNPADDED_MASKS) == 1  # the unpadded one only
    assert built["padded"] is not None
    backbone.train()
    family.embed(backbone, input_ids=ids, attention_mask=ones)
    assert len(UNPADDED_MASKS) == 1
