import pytest
import torch
from transformers import AutoConfig, AutoModel

from eebench.model import MultiExitModel
from eebench.recipe import TrainConfig
from eebench.train.losses import exit_losses, layer_index_weights
from eebench.train.strategies import StepContext, build_stages


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
    loss, _ = stage.loss(model(ids, mask), labels, StepContext(False, 0, 1))
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
    loss, _ = stage2.loss(out, labels, StepContext(False, 0, 1))
    manual = sum(torch.nn.functional.cross_entropy(out.logits[:, i], labels) for i in range(2))
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)


def test_joint_pabee_weights(tiny_bert_config):
    assert layer_index_weights(3).tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    model = _model(tiny_bert_config).eval()
    (stage,) = build_stages(TrainConfig(strategy="joint", args={"layer_weights": "pabee"}))
    ids, mask, labels = torch.randint(5, 64, (4, 6)), torch.ones(4, 6, dtype=torch.long), torch.tensor([0, 1, 1, 0])
    out = model(ids, mask)
    loss, _ = stage.loss(out, labels, StepContext(False, 0, 1))
    per = exit_losses(out.logits, labels, False)
    assert loss.item() == pytest.approx(((per * torch.tensor([1, 2, 3.0])).sum() / 6).item(), rel=1e-6)
    assert len(list(stage.trains(model))) == len(list(model.parameters()))


def test_regression_loss_is_mse():
    logits = torch.tensor([[[1.0], [2.0]], [[3.0], [0.0]]])
    labels = torch.tensor([1.0, 1.0])
    assert exit_losses(logits, labels, True).tolist() == pytest.approx([(0 + 4) / 2, (1 + 1) / 2])


# ---------------------------------------------------------------- issue 3 strategies
import math

import torch.nn.functional as F

from eebench.train.gradients import project_conflict, projection_params, regularized_gradients
from eebench.train.losses import distill_losses


def test_kd_term_equals_the_formula_on_fixed_logits():
    student = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # Shape: [B=1, S=2, C=2]
    teacher = torch.tensor([[2.0, -1.0]])
    t = 3.0
    got = distill_losses(student, teacher, t, regression=False)

    def softmax(v):
        e = [math.exp(x / t) for x in v]
        return [x / sum(e) for x in e]

    p = softmax([2.0, -1.0])
    for s, row in enumerate(([1.0, 0.0], [0.0, 2.0])):
        q = softmax(row)
        kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        assert got[s].item() == pytest.approx(t * t * kl, rel=1e-5)


def test_self_distill_stage2_loss(tiny_bert_config):
    model = _model(tiny_bert_config).eval()
    _, stage2 = build_stages(TrainConfig(strategy="self_distill", args={"gamma": 0.9, "temperature": 3.0}))
    ids, mask, labels = torch.randint(5, 64, (4, 6)), torch.ones(4, 6, dtype=torch.long), torch.tensor([0, 1, 1, 0])
    out = model(ids, mask)
    loss, _ = stage2.loss(out, labels, StepContext(False, 0, 1))
    teacher = F.softmax(out.logits[:, -1] / 3, -1)
    manual = 0.0
    for i in range(2):  # romebert/DeeBERT-SD's KDLoss: nn.KLDivLoss() with its default 'mean' reduction
        ce = F.cross_entropy(out.logits[:, i], labels)
        kl = torch.nn.KLDivLoss()(F.log_softmax(out.logits[:, i] / 3, -1), teacher)
        manual = manual + 0.1 * ce + 0.9 * 9 * kl
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    fast = build_stages(TrainConfig(strategy="self_distill", args={"gamma": 1.0, "temperature": 1.0,
                                                                   "kd_reduction": "batchmean"}))[1]
    loss, _ = fast.loss(out, labels, StepContext(False, 0, 1))  # FastBERT: pure distillation
    kd = sum(F.kl_div(F.log_softmax(out.logits[:, i], -1), F.softmax(out.logits[:, -1], -1),
                      reduction="batchmean") for i in range(2))
    assert loss.item() == pytest.approx(kd.item(), rel=1e-4)


def test_alternating_switches_losses(tiny_bert_config):
    model = _model(tiny_bert_config).eval()
    ids, mask, labels = torch.randint(5, 64, (4, 6)), torch.ones(4, 6, dtype=torch.long), torch.tensor([0, 1, 1, 0])
    out = model(ids, mask)
    per = exit_losses(out.logits, labels, False)
    (step_stage,) = build_stages(TrainConfig(strategy="alternating"))
    assert step_stage.loss(out, labels, StepContext(False, 0, 1))[0].item() == pytest.approx(per[-1].item())
    assert step_stage.loss(out, labels, StepContext(False, 1, 1, epoch_step=1))[0].item() == pytest.approx(per.sum().item())
    # castorini/berxit's step_num is the batch index within the epoch: parity restarts every epoch
    restart = StepContext(False, 7, 2, epoch_step=0)  # 7 steps into the stage, first step of epoch 2
    assert step_stage.loss(out, labels, restart)[0].item() == pytest.approx(per[-1].item())
    (epoch_stage,) = build_stages(TrainConfig(strategy="alternating", args={"every": "epoch"}))
    assert epoch_stage.loss(out, labels, StepContext(False, 1, 1))[0].item() == pytest.approx(per[-1].item())
    assert epoch_stage.loss(out, labels, StepContext(False, 0, 2))[0].item() == pytest.approx(per.sum().item())


def test_projection_removes_exactly_the_conflicting_component():
    g, o = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0])
    p, conflict = project_conflict(g, o)
    assert conflict and torch.dot(p, o).item() == pytest.approx(0.0, abs=1e-6)
    # only the component along o changed: g − p is parallel to o
    diff = g - p
    assert torch.allclose(diff, (torch.dot(g, o) / o.dot(o)) * o)
    same, conflict = project_conflict(torch.tensor([1.0, 2.0, 0.0]), o)
    assert not conflict and torch.equal(same, torch.tensor([1.0, 2.0, 0.0]))


def test_regularized_gradients_only_project_selected_parameters():
    g_f = [torch.tensor([1.0, 0.0]), torch.tensor([3.0])]
    g_s = [torch.tensor([-1.0, 1.0]), torch.tensor([-5.0])]
    out, parts = regularized_gradients(g_f, g_s, ["a", "b"], {"a"})
    # a: g_f·g_s = -1 < 0 → Proj(g_f) = g_f + 0.5·g_s = [0.5, 0.5]; plus g_s → [-0.5, 1.5]
    assert out[0].tolist() == pytest.approx([-0.5, 1.5]) and parts["gr_conflict"] == 1.0
    assert out[1].tolist() == [-2.0]  # b is not projected: plain sum


def test_projection_params_follow_the_public_code(tiny_bert_config):
    names = projection_params(_model(tiny_bert_config))
    assert names and all(".layer.2." not in n for n in names)  # not the last layer
    assert not any("LayerNorm" in n or n.endswith("bias") for n in names)
    assert any(".layer.0.attention.self.query.weight" in n for n in names)


def _romebert_batch(model, stage, want_conflict: bool):
    """A batch whose g_f·g_s on the projected parameters is clearly negative (or clearly positive):
    |cos| > 0.05, so which branch the projection takes does not hang on rounding."""
    names = {n for n in projection_params(model)}
    sel = [p for n, p in model.named_parameters() if n in names]
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        ids, labels = torch.randint(5, 64, (4, 6), generator=g), torch.randint(0, 2, (4,), generator=g)
        mask = torch.ones(4, 6, dtype=torch.long)
        losses = stage.parts(model(ids, mask), labels, StepContext(False, 0, 1))
        f, s = (torch.cat([x.reshape(-1) for x in torch.autograd.grad(losses[k], sel, retain_graph=True)])
                for k in ("final", "sd"))
        cos = (f.dot(s) / (f.norm() * s.norm())).item()
        if (cos < -0.05) if want_conflict else (cos > 0.05):
            return ids, mask, labels
    raise AssertionError("no batch with a clear (non-)conflict in 200 seeds")


@pytest.mark.parametrize("want_conflict", [True, False])
def test_romebert_gradient_matches_a_manual_computation(tiny_bert_config, want_conflict):
    from eebench.train.strategies.romebert import romebert_parts

    model = _model(tiny_bert_config).eval()
    (stage,) = build_stages(TrainConfig(strategy="romebert"), task="sst2")
    ids, mask, labels = _romebert_batch(model, stage, want_conflict)
    params = list(model.parameters())
    ctx = StepContext(False, 0, 1)
    losses = stage.parts(model(ids, mask), labels, ctx)
    assert set(losses) == {"final", "sd"}
    grads = {name: list(torch.autograd.grad(loss, params, retain_graph=True)) for name, loss in losses.items()}
    got, _ = stage.combine(model, params, grads)
    l_final, l_sd = romebert_parts(model(ids, mask), labels, ctx, 0.9, 3.0)
    g_f = torch.autograd.grad(l_final, params, retain_graph=True, allow_unused=True)
    g_s = torch.autograd.grad(l_sd, params, allow_unused=True)
    names = [n for n, _ in model.named_parameters()]
    sel = [i for i, n in enumerate(names) if n in set(projection_params(model))]
    f = torch.cat([g_f[i].reshape(-1) for i in sel])
    s = torch.cat([g_s[i].reshape(-1) for i in sel])
    assert (f.dot(s) < 0) == want_conflict
    if want_conflict:
        f = f - f.dot(s) / s.dot(s) * s
    flat = torch.cat([got[i].reshape(-1) for i in sel])
    assert torch.allclose(flat, f + s, atol=1e-6)
    rest = [i for i in range(len(params)) if i not in sel and g_f[i] is not None]
    for i in rest:
        expected = g_f[i] + (g_s[i] if g_s[i] is not None else 0)
        assert torch.allclose(got[i], expected, atol=1e-6)


def test_head_lr_puts_exit_heads_in_their_own_groups(tiny_bert_config):
    from eebench.train.loop import param_groups

    model = _model(tiny_bert_config)
    params = list(model.parameters())
    groups = param_groups(model, params, weight_decay=0.01, head_lr=1e-3)
    head_ids = {id(p) for p in model.heads.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(params)
    for g in groups:
        in_heads = {id(p) in head_ids for p in g["params"]}
        assert len(in_heads) == 1  # a group is all heads or no heads
        assert (g.get("lr") == 1e-3) == in_heads.pop()
    plain = param_groups(model, params, weight_decay=0.01)
    assert all("lr" not in g for g in plain) and len(plain) == 2


def test_romebert_kd_reduction_matches_nn_kldivloss_default_mean():
    import warnings

    import torch.nn.functional as F

    from eebench.train.losses import distill_losses

    torch.manual_seed(0)
    student, teacher, t = torch.randn(4, 3, 3), torch.randn(4, 3), 3.0  # Shape: [B, S, C], [B, C]
    ours = distill_losses(student, teacher, t, False, class_mean=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'mean' reduction warns that it divides by B·C
        for i in range(3):
            ref = torch.nn.KLDivLoss()(F.log_softmax(student[:, i] / t, -1), F.softmax(teacher / t, -1)) * t * t
            assert torch.isclose(ours[i], ref, atol=1e-6)
    assert torch.allclose(distill_losses(student, teacher, t, False), 3 * ours, atol=1e-6)  # batchmean = C ×
