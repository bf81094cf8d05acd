import pytest
import torch
from transformers import AutoConfig, AutoModel

from eebench.model import MultiExitModel
from eebench.recipe import TrainConfig
from eebench.train.losses import exit_losses, layer_index_weights
from eebench.train.strategies import build_stages


def _model(cfg):
    torch.manual_seed(0)
    return MultiExitModel(AutoModel.from_config(AutoConfig.for_model("bert", **cfg)), num_labels=2)


def _step(model, stage, ids, mask, labels):
    for p in model.parameters():
        p.requires_grad_(False)
    params = stage.trains(model)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=0.1)
    loss, _ = stage.loss(model(ids, mask), labels, False)
    loss.backward()
    opt.step()


def test_two_stage_trains_the_right_parameters(tiny_bert_config):
    model = _model(tiny_bert_config)
    stage1, stage2 = build_stages(TrainConfig(strategy="two_stage", args={"stage2_lr": 1e-3, "stage2_epochs": 2}))
    assert (stage2.lr, stage2.epochs) == (1e-3, 2)
    ids, mask, labels = torch.randint(5, 64, (4, 6)), torch.ones(4, 6, dtype=torch.long), torch.tensor([0, 1, 0, 1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, stage1, ids, mask, labels)
    after1 = {k: v.clone() for k, v in model.state_dict().items()}
    changed = {k for k in before if not torch.equal(before[k], after1[k])}
    assert any(k.startswith("backbone.") for k in changed) and any(k.startswith("heads.2.") for k in changed)
    assert not any(k.startswith(("heads.0.", "heads.1.")) for k in changed)
    _step(model, stage2, ids, mask, labels)
    changed2 = {k for k, v in model.state_dict().items() if not torch.equal(after1[k], v)}
    assert changed2 and all(k.startswith(("heads.0.", "heads.1.")) for k in changed2)


def test_two_stage_stage2_loss_is_sum_of_early_exit_ce(tiny_bert_config):
    model = _model(tiny_bert_config).eval()
    _, stage2 = build_stages(TrainConfig())
    ids, mask, labels = torch.randint(5, 64, (4, 6)), torch.ones(4, 6, dtype=torch.long), torch.tensor([0, 1, 1, 1])
    out = model(ids, mask)
    loss, _ = stage2.loss(out, labels, False)
    manual = sum(torch.nn.functional.cross_entropy(out.logits[:, i], labels) for i in range(2))
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)


def test_joint_pabee_weights(tiny_bert_config):
    assert layer_index_weights(3).tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    model = _model(tiny_bert_config).eval()
    (stage,) = build_stages(TrainConfig(strategy="joint", args={"layer_weights": "pabee"}))
    ids, mask, labels = torch.randint(5, 64, (4, 6)), torch.ones(4, 6, dtype=torch.long), torch.tensor([0, 1, 1, 0])
    out = model(ids, mask)
    loss, _ = stage.loss(out, labels, False)
    per = exit_losses(out.logits, labels, False)
    assert loss.item() == pytest.approx(((per * torch.tensor([1, 2, 3.0])).sum() / 6).item(), rel=1e-6)
    assert len(list(stage.trains(model))) == len(list(model.parameters()))


def test_regression_loss_is_mse():
    logits = torch.tensor([[[1.0], [2.0]], [[3.0], [0.0]]])
    labels = torch.tensor([1.0, 1.0])
    assert exit_losses(logits, labels, True).tolist() == pytest.approx([(0 + 4) / 2, (1 + 1) / 2])
