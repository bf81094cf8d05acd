"""LTE, CsdBERT, SLF, Smart Alternating, MetaBERT (MAML) and SMART: arithmetic pinned by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from eebench.model import MultiExitModel
from eebench.recipe import SmartConfig, TrainConfig
from eebench.train.csd import contrastive_loss, csdbert_terms, difficulty, expert_teacher, split_teachers, student_weights
from eebench.train.losses import distill_losses, exit_losses
from eebench.train.maml import adapt, learn2learn_available, maml_step_learn2learn, maml_step_torch_func
from eebench.train.smart import smart_regularizer, symmetric_kl
from eebench.train.strategies import StepContext, build_stages
from eebench.train.strategies.berter import smart_alternating_phase
from eebench.train.strategies.lte import lte_targets
from eebench.train.strategies.metabert import MetaBertArgs


def _model(cfg, lte=False):
    torch.manual_seed(0)
    return MultiExitModel(AutoModel.from_config(AutoConfig.for_model("bert", **cfg)), num_labels=2, lte=lte)


def _batch(n=4):
    torch.manual_seed(1)
    return torch.randint(5, 64, (n, 6)), torch.ones(n, 6, dtype=torch.long), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1][:n])


def test_lte_targets():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])  # exit 1 predicts 0, exit 2 predicts 1
    assert lte_targets(logits, torch.tensor([1]), False).tolist() == [[0.0, 1.0]]
    reg = torch.tensor([[[0.5], [2.0]]])
    expected = [1 - math.tanh(0.5), 1 - math.tanh(1.0)]
    assert lte_targets(reg, torch.tensor([1.0]), True)[0].tolist() == pytest.approx(expected)


def test_lte_strategy_loss_and_phases(tiny_bert_config):
    model = _model(tiny_bert_config, lte=True).eval()
    ids, mask, labels = _batch()
    out = model(ids, mask)
    assert out.lte.shape == (4, 3) and ((out.lte > 0) & (out.lte < 1)).all()
    (joint,) = build_stages(TrainConfig(strategy="lte", args={"schedule": "joint"}), n_layers=3)
    loss, parts = joint.loss(out, labels, StepContext(False, 0, 1))
    target = lte_targets(out.logits, labels, False)
    manual = exit_losses(out.logits, labels, False).sum() + ((out.lte - target) ** 2).mean()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    (summed,) = build_stages(TrainConfig(strategy="lte", args={"schedule": "joint", "lte_reduction": "sum"}), n_layers=3)
    manual = exit_losses(out.logits, labels, False).sum() + ((out.lte - target) ** 2).mean(0).sum()
    assert summed.loss(out, labels, StepContext(False, 0, 1))[0].item() == pytest.approx(manual.item(), rel=1e-6)
    base, only_lte = build_stages(TrainConfig(strategy="lte", args={"lte_phase": "after"}), n_layers=3)
    assert [p.shape for p in only_lte.trains(model)] == [p.shape for p in model.lte.parameters()]


def test_berxit_alternate_lte_matches_the_reference_formula(tiny_bert_config):
    """castorini/berxit modeling_highway_bert.py, train_strategy 'alternate-lte': exit_pred = the LTE
    outputs (probability to continue), exit_label = 1 − correct; even step_num: CE_final + MSELoss()(pred,
    label) over the stacked [L, B] tensors; odd: Σ CE of exits 1..L-1 (no final) + the same MSE."""
    model = _model(tiny_bert_config, lte=True).eval()
    ids, mask, labels = _batch()
    out = model(ids, mask)
    (stage,) = build_stages(TrainConfig(strategy="lte"), n_layers=3)  # alternating + joint LTE
    continue_prob = (1 - out.lte).T  # [L, B]: the reference's sigmoid output, eebench's u = 1 − it
    wrong = (out.logits.argmax(-1) != labels[:, None]).float().T  # [L, B]
    mse = torch.nn.MSELoss()(continue_prob, wrong)
    ce = [F.cross_entropy(out.logits[:, i], labels) for i in range(3)]
    even = stage.loss(out, labels, StepContext(False, 0, 1, epoch_step=0))[0]
    odd = stage.loss(out, labels, StepContext(False, 1, 1, epoch_step=1))[0]
    assert even.item() == pytest.approx((ce[2] + mse).item(), rel=1e-6)
    assert odd.item() == pytest.approx((ce[0] + ce[1] + mse).item(), rel=1e-6)
    (keep,) = build_stages(TrainConfig(strategy="lte", args={"odd_step_final": True}), n_layers=3)
    odd_keep = keep.loss(out, labels, StepContext(False, 1, 1, epoch_step=1))[0]
    assert odd_keep.item() == pytest.approx((ce[0] + ce[1] + ce[2] + mse).item(), rel=1e-6)


def test_csdbert_pieces():
    assert split_teachers(torch.tensor([0.5, 0.1, 0.9, 0.3]), 2)[0].tolist() == [1, 3]
    assert student_weights(3).tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert difficulty(torch.zeros(3)).item() == pytest.approx(1.0)  # uniform: most difficult
    assert difficulty(torch.tensor([100.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)
    t = torch.tensor([[[3.0, 3.0], [50.0, 0.0]]])  # teacher 1 uniform (Dif 1), teacher 2 certain (Dif ≈ 0)
    assert expert_teacher(t)[0].tolist() == pytest.approx([3.0, 3.0], abs=1e-4)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    sim = F.normalize(teacher, dim=-1) @ F.normalize(student, dim=-1).T / 0.5
    manual = -(torch.log_softmax(sim, 1)[0, 0] + torch.log_softmax(sim, 1)[1, 1]) / 2
    assert contrastive_loss(teacher, student, 0.5).item() == pytest.approx(manual.item(), rel=1e-6)


def test_contrastive_loss_is_flat_when_every_sentence_gives_one_vector():
    """docs/replication.md: MiniLM's first token is the same vector for every sentence at layers 1-4, so
    L_SCL sits at log B with no gradient to the students (why the "without L_SCL" runs match CsdBERT)."""
    torch.manual_seed(0)
    teacher = torch.randn(1, 8).repeat(32, 1)
    student = (torch.randn(1, 8).repeat(32, 1)).requires_grad_(True)
    loss = contrastive_loss(teacher, student, 0.5)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(32), rel=1e-6)
    assert student.grad.abs().max().item() < 1e-6
    spread = contrastive_loss(torch.randn(32, 8), torch.randn(32, 8), 0.5)  # distinct sentences: not pinned
    assert abs(spread.item() - math.log(32)) > 1e-3


def test_csdbert_total_and_ablations(tiny_bert_config):
    model = _model(tiny_bert_config).eval()
    ids, mask, labels = _batch()
    out = model(ids, mask)
    ce = exit_losses(out.logits, labels, False)
    terms = csdbert_terms(out.logits, out.first_token, ce, 1, 0.5, 4.0, False)
    teachers, students = split_teachers(ce, 1)
    t_exp = expert_teacher(out.logits[:, teachers])
    assert terms["kd"].item() == pytest.approx(distill_losses(out.logits[:, students], t_exp, 4.0, False).sum().item(), rel=1e-5)
    (stage,) = build_stages(TrainConfig(strategy="csdbert", args={"n_teachers": 1}), n_layers=3)
    loss, _ = stage.loss(out, labels, StepContext(False, 0, 1))
    assert loss.item() == pytest.approx((ce.sum() + 0.01 * terms["scl"] + terms["kd"]).item(), rel=1e-5)
    (no_scl,) = build_stages(TrainConfig(strategy="csdbert", args={"n_teachers": 1, "contrastive": False,
                                                                  "distillation": False}), n_layers=3)
    assert no_scl.loss(out, labels, StepContext(False, 0, 1))[0].item() == pytest.approx(ce.sum().item(), rel=1e-6)


def test_slf_stages_train_one_layer_each(tiny_bert_config):
    model = _model(tiny_bert_config)
    stages = build_stages(TrainConfig(strategy="slf"), n_layers=3)
    assert [s.name for s in stages] == ["focus1", "focus2", "focus3", "refine"]
    names = {id(p): n for n, p in model.named_parameters()}
    first = {names[id(p)] for p in stages[0].trains(model)}
    second = {names[id(p)] for p in stages[1].trains(model)}
    assert any("embeddings" in n for n in first) and all(".layer.1." not in n for n in first)
    assert all(("layer.1." in n) or n.startswith("heads.1.") for n in second)
    assert any(n.startswith("heads.1.") for n in second)


def test_smart_alternating_rule():
    assert smart_alternating_phase([]) == "final"
    h = lambda *finals: [{"dev_layerwise": [50.0, f]} for f in finals]  # noqa: E731
    assert smart_alternating_phase(h(80)) == "all"
    assert smart_alternating_phase(h(80, 82)) == "all"
    assert smart_alternating_phase(h(80, 79)) == "final"
    assert smart_alternating_phase(h(80, 79, 80)) == "all"  # ties with the best count as best


def test_one_maml_inner_step_equals_manual_sgd(tiny_bert_config):
    model = _model(tiny_bert_config).eval()
    ids, mask, labels = _batch()
    params = dict(model.named_parameters())
    fast = adapt(model, params, {"input_ids": ids, "attention_mask": mask}, labels, False, 0.01, 1, True)
    loss = exit_losses(model(ids, mask).logits, labels, False).sum()
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    for (name, p), g in zip(params.items(), grads):
        expected = p - 0.01 * g if g is not None else p
        assert torch.allclose(fast[name], expected, atol=1e-6), name


def test_second_order_maml_differs_from_first_order(tiny_bert_config):
    ids, mask, labels = _batch(8)
    batch = {"input_ids": ids, "attention_mask": mask}
    grads = {}
    for first_order in (True, False):
        model = _model(tiny_bert_config).eval()
        args = MetaBertArgs(support_size=2, query_size=2, meta_batch=2, inner_lr=0.5, first_order=first_order)
        maml_step_torch_func(model, batch, labels, False, args)
        grads[first_order] = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    assert grads[True].shape == grads[False].shape
    assert not torch.allclose(grads[True], grads[False])


@pytest.mark.skipif(not learn2learn_available(), reason="learn2learn is not importable (optional extra)")
def test_learn2learn_backend_gives_the_same_gradients(tiny_bert_config):
    ids, mask, labels = _batch(8)
    batch = {"input_ids": ids, "attention_mask": mask}
    args = MetaBertArgs(support_size=2, query_size=2, meta_batch=2, inner_lr=0.1)
    out = []
    for step in (maml_step_torch_func, maml_step_learn2learn):
        model = _model(tiny_bert_config).eval()
        step(model, batch, labels, False, args)
        out.append([p.grad for p in model.parameters()])
    for a, b in zip(*out):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-5))


def test_symmetric_kl_and_smart_regularizer(tiny_bert_config):
    p, q = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    pp, qq = F.softmax(p, -1), F.softmax(q, -1)
    manual = (pp * (pp / qq).log()).sum() + (qq * (qq / pp).log()).sum()
    assert symmetric_kl(p, q).item() == pytest.approx(manual.item(), rel=1e-6)
    assert symmetric_kl(p, p).item() == pytest.approx(0.0, abs=1e-7)
    model = _model(tiny_bert_config).eval()
    ids, mask, _ = _batch()
    batch = {"input_ids": ids, "attention_mask": mask}
    reg = smart_regularizer(model, batch, model(ids, mask).logits, False, SmartConfig(enabled=True))
    assert reg.item() > 0 and reg.requires_grad
