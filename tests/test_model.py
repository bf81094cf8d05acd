import pytest
import torch
from transformers import AutoConfig, AutoModel

from eebench.model import MultiExitModel
from eebench.model.build import load_model, save_model


def _bert(cfg):
    torch.manual_seed(0)
    return AutoModel.from_config(AutoConfig.for_model("bert", **cfg))


def _distilbert():
    torch.manual_seed(0)
    cfg = AutoConfig.for_model("distilbert", dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=64,
                               max_position_embeddings=64)
    return AutoModel.from_config(cfg)


def _batch():
    ids = torch.randint(5, 64, (3, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    return ids, mask


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_forward_returns_every_exit(arch, tiny_bert_config):
    backbone = _bert(tiny_bert_config) if arch == "bert" else _distilbert()
    model = MultiExitModel(backbone, num_labels=3).eval()
    ids, mask = _batch()
    out = model(ids, mask)
    n_layers = 3 if arch == "bert" else 2
    assert out.logits.shape == (3, n_layers, 3)
    assert out.pooled.shape[:2] == (3, n_layers)
    assert len(model.heads) == n_layers


def test_off_ramp_poolers_start_from_the_pretrained_pooler(tiny_bert_config):
    backbone = _bert(tiny_bert_config)
    pooler_w = backbone.pooler.dense.weight.detach().clone()
    model = MultiExitModel(backbone, num_labels=2)
    for head in model.heads:
        assert torch.equal(head.dense.weight, pooler_w)
    assert model.backbone.pooler is None  # the final exit's head plays its role


def test_mean_pooling_ignores_padding(tiny_bert_config):
    model = MultiExitModel(_bert(tiny_bert_config), num_labels=2, pooling="mean").eval()
    ids, mask = _batch()
    short = model(ids[1:2, :4], mask[1:2, :4]).logits
    padded = model(ids[1:2], mask[1:2]).logits
    assert torch.allclose(short, padded, atol=1e-5)


def test_save_and_load_round_trip(tmp_path, tiny_bert_config):
    from eebench.data.synthetic import build_tokenizer

    tok = build_tokenizer(tmp_path / "tok")
    model = MultiExitModel(_bert(tiny_bert_config), num_labels=2, pooling="mean").eval()
    save_model(model, tok, tmp_path / "model", {"task": "synthetic"})
    loaded, tok2, meta = load_model(tmp_path / "model")
    ids, mask = _batch()
    assert torch.allclose(model(ids, mask).logits, loaded(ids, mask).logits)
    assert meta["pooling"] == "mean" and meta["task"] == "synthetic"
    assert tok2.vocab_size == tok.vocab_size
