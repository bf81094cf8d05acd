"""Training strategies as named units: a list of stages, each a loss over all exits' outputs plus
which parameters it trains. Recipes select one with ``train.strategy`` and give its ``train.args``.
docs/methods.md gives each strategy's formula and the choices made."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eebench.train.csd import csdbert_terms
from eebench.train.gradients import projection_params, regularized_gradients
from eebench.train.losses import LAYER_WEIGHTS, distill_losses, exit_losses
from eebench.train.parallel import Parallel


@dataclass
class StepContext:
    regression: bool
    step: int  # optimisation step within the stage, from 0
    epoch: int  # from 1
    history: list = field(default_factory=list)  # per-epoch summaries so far (dev metrics included)
    pair_loss: str = "cross_entropy"  # or "cosine" (task.pair_loss)
    parallel: Parallel = field(default_factory=Parallel)  # this process among the data-parallel ones
    seed: int = 0  # train.seed
    stage: int = 0  # the stage's index
    backward: Callable[[torch.Tensor], None] = lambda loss: loss.backward()
    """How a GradFn back-propagates a loss (scaled under fp16)."""
    epoch_step: int = 0
    """Optimisation step within the epoch, from 0 (BERxiT's alternation parity restarts every epoch)."""

    @property
    def noise_key(self) -> tuple[int, int, int]:
        """Seeds SMART's per-example noise: the same for an example whichever process holds it."""
        return (self.seed, self.stage, self.step)


# (outputs, labels, ctx) → (loss, parts to log)
LossFn = Callable[[Any, torch.Tensor, StepContext], tuple[torch.Tensor, dict[str, float]]]
# (model, global batch, labels, ctx, params) → parts to log (with "loss"), this process's share of
# the global values; runs its own passes over its share of the batch (``ctx.parallel``) and
# back-propagates with ``ctx.backward`` (MAML's episodes); the loop sums gradients over processes
GradFn = Callable[[Any, dict, torch.Tensor, StepContext, list], dict[str, float]]
# (outputs, labels, ctx) → named losses whose gradients a CombineFn joins (RomeBERT's GR)
PartsFn = Callable[[Any, torch.Tensor, StepContext], dict[str, torch.Tensor]]
# (model, params, {part name: gradients summed over the global batch}) → (gradients, parts to log)
CombineFn = Callable[[Any, list, dict[str, list]], tuple[list, dict[str, float]]]


@dataclass
class Stage:
    name: str
    epochs: int
    lr: float
    trains: Callable[[Any], list[torch.nn.Parameter]]  # model → the parameters this stage updates
    loss: LossFn
    gradient: GradFn | None = None  # None: backward of ``loss``
    batch_size: int | None = None  # None: train.batch_size
    parts: PartsFn | None = None
    """Set with ``combine``: the gradient of each named loss is taken separately over the whole
    global batch (every process's share summed), then ``combine`` joins them (RomeBERT's projection
    acts on the averaged g_f and g_s, as a single process would compute them)."""
    combine: CombineFn | None = None
    coupled: bool = False
    """The loss couples a batch's examples (CsdBERT's teacher ranking and contrastive negatives): it
    is computed over the rows of every process (eebench.train.parallel.Parallel.gather_rows)."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TwoStageArgs(_Args):
    """DeeBERT. Stage 1: backbone + final exit on the final exit's loss. Stage 2: backbone and final
    exit frozen; exits 1..L-1 trained on the sum of their losses."""

    stage2_lr: float | None = Field(None, gt=0)
    """Learning rate of stage 2 (default: train.lr)."""
    stage2_epochs: int | None = Field(None, ge=0)
    """Epochs of stage 2 (default: train.epochs)."""


class JointArgs(_Args):
    """All parameters, one stage, Σ_i w_i · L_i over all exits."""

    layer_weights: Literal["uniform", "pabee", "sqrt", "inverse"] = "uniform"


class AlternatingArgs(_Args):
    """BERxiT: alternate the final exit's loss and the sum of all exits' losses."""

    every: Literal["step", "epoch"] = "step"
    """Alternate per optimisation step (BERxiT) or per epoch (as MetaBERT describes it). Per step, the
    parity is the step's within its epoch, as castorini/berxit counts it (restarting every epoch)."""


class SelfDistillArgs(TwoStageArgs):
    """DeeBERT+SD / FastBERT: two-stage; stage 2 distils the (frozen) final exit into exits 1..L-1."""

    gamma: float = Field(0.9, ge=0, le=1)
    temperature: float = Field(3.0, gt=0)
    kd_reduction: Literal["class_mean", "batchmean"] = "class_mean"
    """class_mean: the KL term averaged over batch and classes, as romebert/DeeBERT-SD's
    ``nn.KLDivLoss()`` (default 'mean' reduction) computes it — the code the DeeBERT+SD rows of
    RomeBERT's tables come from; batchmean: summed over classes, averaged over the batch (C× larger)."""


class RomeBertArgs(_Args):
    """RomeBERT: one stage, all parameters, L_final + L_sd, with gradient regularization."""

    gamma: float = Field(0.9, ge=0, le=1)
    temperature: float = Field(3.0, gt=0)
    gradient_regularization: bool = True
    """False: self-distillation only (the paper's SD ablation): one backward of L_final + L_sd."""
    role_swap: bool = False
    """Public code: on tasks other than MNLI/QQP the roles are as in the paper (g_f is projected);
    on MNLI/QQP it projects g_s off g_f instead. True applies that per-task swap."""
    task: str = ""
    """Filled in from task.name; decides the role swap."""
    kd_reduction: Literal["class_mean", "batchmean"] = "class_mean"
    """class_mean: the KL term averaged over batch and classes, as the public code's nn.KLDivLoss()
    (default 'mean' reduction) computes it — the numbers RomeBERT's tables come from; batchmean: the
    KL summed over classes and averaged over the batch, as the paper's formula reads (C times larger)."""


class LteArgs(_Args):
    """Learned-to-exit (BERxiT, BERTer): a shared linear + sigmoid on every exit's pooled output
    predicts the exit's certainty, trained with MSE to the ground-truth certainty."""

    schedule: Literal["alternating", "joint"] = "alternating"
    """The exits' training: BERxiT's alternating, or joint (BERTer)."""
    lte_phase: Literal["joint", "after"] = "joint"
    """joint: the LTE loss is added at every step (BERTer: L_i + J_i); after: the schedule first,
    then a stage training only the LTE head (the public BERxiT code's `-lte` phase)."""
    lte_epochs: int = Field(1, ge=1)
    """Epochs of the LTE-only stage (lte_phase = "after")."""
    every: Literal["step", "epoch"] = "step"
    layer_weights: Literal["uniform", "pabee", "sqrt", "inverse"] = "uniform"
    lte_reduction: Literal["mean", "sum"] = "mean"
    """mean: the LTE loss is the MSE averaged over layers × batch, as castorini/berxit's
    ``MSELoss()(exit_pred, exit_label)`` on the stacked [L, B] tensors; sum: summed over layers (L× larger;
    BERTer's Σ_i (L_i + J_i), what train.lte uses)."""
    odd_step_final: bool = False
    """schedule = "alternating", lte_phase = "joint" (BERxiT's alternate-lte): whether odd steps also
    train the final exit. The reference leaves it out (odd steps: exits 1..L-1 + LTE); True keeps it,
    as plain ``alternating`` does."""


class CsdBertArgs(_Args):
    """CsdBERT: L_CE (sum over exits) + α·L_SCL + β·L_KD, teachers = the lowest-loss exits per batch."""

    n_teachers: int | None = Field(None, ge=1)
    """Teachers per batch; default: half the exits (6 of 12 in the paper)."""
    tau: float = Field(0.5, gt=0)
    kd_temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.01, ge=0)
    beta: float = Field(1.0, ge=0)
    contrastive: bool = True
    """False: drop L_SCL (Table 5 ablation)."""
    distillation: bool = True
    """False: drop L_KD (Table 5 ablation)."""


class SlfArgs(_Args):
    """BERTer's Sequential Layer Focus: stage 1 trains, for i = 1..L in turn, exit i with layer i's
    parameters (and the embeddings for i = 1); stage 2 trains everything jointly (train.epochs)."""

    focus_epochs: int = Field(1, ge=0)
    """Epochs of each layer's focus stage."""
    focus_lr: float | None = Field(None, gt=0)
    """Learning rate of the focus stages (default: train.lr)."""
    refine: Literal["joint", "smart_alternating"] = "joint"
    """Stage 2 (global refinement): the joint sum of all exits' losses, or Smart Alternating
    (BERTer's "SLF + Smart Alt" rows)."""


class NoArgs(_Args):
    """No arguments."""


class SmartAlternatingArgs(_Args):
    """BERTer's Smart Alternating: per epoch, train (a) the final exit + backbone on L_final, or
    (b) all exits jointly on Σ_i L_i. Rule: epoch 1 is (a); after it, (b) when the final exit's dev
    metric of the last epoch is the best seen so far (ties count), else (a)."""


class MetaBertArgs(_Args):
    """MetaBERT: phase 1 meta-learns θ with MAML on episodes from the training data (Algorithm 1);
    phase 2 trains all exits jointly from θ with the sum of their losses (Algorithm 2)."""

    meta_epochs: int = Field(1, ge=0)
    """Passes of phase 1 over the training data."""
    support_size: int = Field(16, ge=1)
    query_size: int = Field(16, ge=1)
    meta_batch: int = Field(2, ge=1)
    """Episodes per outer update."""
    inner_lr: float = Field(1e-3, gt=0)
    """α: step of the inner SGD update."""
    inner_steps: int = Field(1, ge=1)
    first_order: bool = False
    """True: first-order MAML (no second derivatives); False: full second-order MAML."""
    meta_lr: float | None = Field(None, gt=0)
    """β: the outer (Adam) learning rate; default train.lr."""
    backend: Literal["auto", "torch_func", "learn2learn"] = "auto"
    """auto: learn2learn when it imports, else torch.func."""


# ------------------------------------------------------------------------ parameter selections
def _all_params(model) -> list[torch.nn.Parameter]:
    return list(model.parameters())


def _final_exit_and_backbone(model) -> list[torch.nn.Parameter]:
    return list(model.backbone.parameters()) + list(model.heads[-1].parameters())


def _early_exits(model) -> list[torch.nn.Parameter]:
    return [p for head in model.heads[:-1] for p in head.parameters()]


# What each selection trains of the exit heads: train.lte's term joins stages training all of them
# or the early ones (eebench.train.strategies.with_lte).
_all_params.exit_heads = "all"
_early_exits.exit_heads = "early"
_final_exit_and_backbone.exit_heads = "final"


# ------------------------------------------------------------------------ losses
def final_exit_loss(out, labels, ctx):
    loss = exit_losses(out.logits[:, -1:], labels, ctx.regression, ctx.pair_loss).sum()
    return loss, {"loss_final": loss.item()}


def early_exits_loss(out, labels, ctx):
    loss = exit_losses(out.logits[:, :-1], labels, ctx.regression, ctx.pair_loss).sum()
    return loss, {"loss_exits": loss.item()}


def weighted_exits_loss(weight_fn: Callable[[int], torch.Tensor]) -> LossFn:
    def loss(out, labels, ctx):
        losses = exit_losses(out.logits, labels, ctx.regression, ctx.pair_loss)  # Shape: [L]
        total = (weight_fn(losses.numel()).to(losses) * losses).sum()
        return total, {"loss_final": losses[-1].item(), "loss_mean": losses.mean().item()}

    return loss


def self_distill_loss(gamma: float, temperature: float, class_mean: bool = False) -> LossFn:
    """Σ_{i<L} [(1−γ)·L_i + γ·T²·KL(p_L(T) ‖ p_i(T))], teacher = final exit, detached."""

    def loss(out, labels, ctx):
        ce = exit_losses(out.logits[:, :-1], labels, ctx.regression, ctx.pair_loss)  # Shape: [L-1]
        kd = distill_losses(out.logits[:, :-1], out.logits[:, -1].detach(), temperature, ctx.regression,
                            class_mean)
        total = ((1 - gamma) * ce + gamma * kd).sum()
        return total, {"loss_sd": total.item(), "loss_kd": kd.sum().item()}

    return loss


def alternating_loss(every: str, odd_final: bool = True) -> LossFn:
    """Even steps (or epochs): the final exit's loss; odd: the sum of all exits' losses (without the
    final exit's when ``odd_final`` is False, as BERxiT's alternate-lte). Step parity counts within
    the epoch (castorini/berxit's ``step_num`` is the batch index of its epoch)."""
    odd = weighted_exits_loss(LAYER_WEIGHTS["uniform"]) if odd_final else early_exits_loss

    def loss(out, labels, ctx):
        phase = ctx.epoch_step if every == "step" else ctx.epoch - 1
        return final_exit_loss(out, labels, ctx) if phase % 2 == 0 else odd(out, labels, ctx)

    return loss


def romebert_parts(out, labels, ctx, gamma, temperature, kd_reduction="class_mean"):
    l_final, _ = final_exit_loss(out, labels, ctx)
    l_sd, _ = self_distill_loss(gamma, temperature, kd_reduction == "class_mean")(out, labels, ctx)
    return l_final, l_sd


def romebert_combine(args: RomeBertArgs) -> CombineFn:
    """g* = Proj(g_f) + g_s (g_f of L_final, g_s of L_sd, each over the global batch)."""
    project_final = not (args.role_swap and args.task in ("mnli", "qqp"))
    cache: dict[int, set[str]] = {}

    def combine(model, params, grads):
        names = _param_names(model, params)
        project = cache.setdefault(id(model), set(projection_params(model)))
        return regularized_gradients(grads["final"], grads["sd"], names, project, project_final)

    return combine


def lte_targets(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """Ground-truth certainty per exit, Shape: [B, L]: 1[exit i is correct] (classification) or
    1 − tanh|ŷ_i − y| (regression)."""
    if regression:
        return 1.0 - torch.tanh((logits[..., 0] - labels[:, None].to(logits.dtype)).abs())
    return (logits.argmax(-1) == labels[:, None]).to(logits.dtype)


def lte_loss_fn(reduction: str = "sum") -> LossFn:
    """sum: Σ_i mean_b (u_i − ũ_i)²; mean: mean_{i,b} (u_i − ũ_i)² (castorini/berxit). Targets detached."""
    def loss(out, labels, ctx):
        target = lte_targets(out.logits.detach(), labels, ctx.regression)
        per_layer = ((out.lte - target) ** 2).mean(0)  # Shape: [L]
        value = per_layer.mean() if reduction == "mean" else per_layer.sum()
        return value, {"loss_lte": value.item()}

    return loss


lte_loss = lte_loss_fn("sum")


def plus_lte(base: LossFn, lte: LossFn = lte_loss) -> LossFn:
    def loss(out, labels, ctx):
        total, parts = base(out, labels, ctx)
        extra, lte_parts = lte(out, labels, ctx)
        return total + extra, {**parts, **lte_parts}

    return loss


def csdbert_loss(args: CsdBertArgs, n_layers: int | None) -> LossFn:
    def loss(out, labels, ctx):
        ce = exit_losses(out.logits, labels, ctx.regression, ctx.pair_loss)  # Shape: [L]
        n_teachers = args.n_teachers or max(1, ce.numel() // 2)
        terms = csdbert_terms(out.logits, out.first_token, ce, min(n_teachers, ce.numel()), args.tau,
                              args.kd_temperature, ctx.regression, args.contrastive, args.distillation)
        total = ce.sum() + args.alpha * terms.get("scl", 0.0) + args.beta * terms.get("kd", 0.0)
        return total, {"loss_ce": ce.sum().item(), **{f"loss_{k}": v.item() for k, v in terms.items()}}

    return loss


def smart_alternating_phase(history: list) -> str:
    """'final' (train the final exit + backbone) or 'all' (all exits jointly) for the next epoch."""
    if not history:
        return "final"
    finals = [h["dev_layerwise"][-1] for h in history]
    return "all" if finals[-1] >= max(finals) else "final"


def smart_alternating_loss(out, labels, ctx):
    if ctx.history and "dev_layerwise" not in ctx.history[-1]:
        raise RuntimeError("smart_alternating needs per-epoch dev metrics")
    phase = smart_alternating_phase(ctx.history)
    if phase == "final":
        loss, parts = final_exit_loss(out, labels, ctx)
    else:
        loss, parts = weighted_exits_loss(LAYER_WEIGHTS["uniform"])(out, labels, ctx)
    return loss, {**parts, "phase_all": float(phase == "all")}


def _layer_params(i: int) -> Callable[[Any], list[torch.nn.Parameter]]:
    """Layer i's parameters (1-based) and exit i's head; the embeddings too for i = 1."""
    import re

    pattern = re.compile(rf"\.layers?\.{i - 1}\.")

    def select(model) -> list[torch.nn.Parameter]:
        chosen = [p for n, p in model.backbone.named_parameters()
                  if pattern.search("." + n) or (i == 1 and "embeddings" in n)]
        return chosen + list(model.heads[i - 1].parameters())

    return select


def _exit_loss(i: int) -> LossFn:
    def loss(out, labels, ctx):
        value = exit_losses(out.logits[:, i - 1: i], labels, ctx.regression, ctx.pair_loss).sum()
        return value, {f"loss_exit{i}": value.item()}

    return loss


def metabert_gradient(args: MetaBertArgs) -> GradFn:
    from eebench.train.maml import learn2learn_available, maml_step_learn2learn, maml_step_torch_func

    use_l2l = args.backend == "learn2learn" or (args.backend == "auto" and learn2learn_available())
    step = maml_step_learn2learn if use_l2l else maml_step_torch_func

    def gradient(model, batch, labels, ctx, params):
        return step(model, batch, labels, ctx.regression, args, ctx.parallel, ctx.backward)

    return gradient


def _param_names(model, params) -> list[str]:
    lookup = {id(p): n for n, p in model.named_parameters()}
    return [lookup[id(p)] for p in params]


# ------------------------------------------------------------------------ strategies
def two_stage(train, args: TwoStageArgs, n_layers: int | None = None,
              stage2_loss: LossFn = early_exits_loss) -> list[Stage]:
    return [
        Stage("stage1", train.epochs, train.lr, _final_exit_and_backbone, final_exit_loss),
        Stage("stage2", args.stage2_epochs if args.stage2_epochs is not None else train.epochs,
              args.stage2_lr or train.lr, _early_exits, stage2_loss),
    ]


def joint(train, args: JointArgs, n_layers: int | None = None) -> list[Stage]:
    return [Stage("joint", train.epochs, train.lr, _all_params, weighted_exits_loss(LAYER_WEIGHTS[args.layer_weights]))]


def alternating(train, args: AlternatingArgs, n_layers: int | None = None) -> list[Stage]:
    return [Stage("alternating", train.epochs, train.lr, _all_params, alternating_loss(args.every))]


def self_distill(train, args: SelfDistillArgs, n_layers: int | None = None) -> list[Stage]:
    return two_stage(train, args, n_layers, self_distill_loss(args.gamma, args.temperature,
                                                              args.kd_reduction == "class_mean"))


def romebert(train, args: RomeBertArgs, n_layers: int | None = None) -> list[Stage]:
    def loss(out, labels, ctx):
        l_final, l_sd = romebert_parts(out, labels, ctx, args.gamma, args.temperature, args.kd_reduction)
        return l_final + l_sd, {"loss_final": l_final.item(), "loss_sd": l_sd.item()}

    if not args.gradient_regularization:
        return [Stage("romebert", train.epochs, train.lr, _all_params, loss)]

    def parts(out, labels, ctx):
        l_final, l_sd = romebert_parts(out, labels, ctx, args.gamma, args.temperature, args.kd_reduction)
        return {"final": l_final, "sd": l_sd}

    return [Stage("romebert", train.epochs, train.lr, _all_params, loss, parts=parts, combine=romebert_combine(args))]


def lte(train, args: LteArgs, n_layers: int | None = None) -> list[Stage]:
    lte = lte_loss_fn(args.lte_reduction)
    if args.schedule == "alternating":
        base = alternating_loss(args.every, odd_final=args.odd_step_final or args.lte_phase == "after")
    else:
        base = weighted_exits_loss(LAYER_WEIGHTS[args.layer_weights])
    if args.lte_phase == "joint":
        return [Stage(f"{args.schedule}+lte", train.epochs, train.lr, _all_params, plus_lte(base, lte))]
    return [Stage(args.schedule, train.epochs, train.lr, _all_params, base),
            Stage("lte", args.lte_epochs, train.lr, lambda m: list(m.lte.parameters()), lte)]


def csdbert(train, args: CsdBertArgs, n_layers: int | None = None) -> list[Stage]:
    return [Stage("csdbert", train.epochs, train.lr, _all_params, csdbert_loss(args, n_layers), coupled=True)]


def slf(train, args: SlfArgs, n_layers: int | None = None) -> list[Stage]:
    if n_layers is None:
        raise ValueError("slf needs the number of layers")
    lr = args.focus_lr or train.lr
    focus = [Stage(f"focus{i}", args.focus_epochs, lr, _layer_params(i), _exit_loss(i))
             for i in range(1, n_layers + 1)]
    refine = (smart_alternating_loss if args.refine == "smart_alternating"
              else weighted_exits_loss(LAYER_WEIGHTS["uniform"]))
    return focus + [Stage("refine", train.epochs, train.lr, _all_params, refine)]


def finetune(train, args: NoArgs, n_layers: int | None = None) -> list[Stage]:
    """Plain fine-tuning of the backbone and the final exit (the BERT baseline; BERTer's "fine-tune"
    mode). The early exits stay untrained: read such a run at its last exit."""
    return [Stage("finetune", train.epochs, train.lr, _final_exit_and_backbone, final_exit_loss)]


def head_only(train, args: NoArgs, n_layers: int | None = None) -> list[Stage]:
    """The backbone frozen, only the final exit's head trained (BERTer's "pretrain" mode,
    last-linear-layer)."""
    return [Stage("head_only", train.epochs, train.lr, lambda m: list(m.heads[-1].parameters()), final_exit_loss)]


def smart_alternating(train, args: SmartAlternatingArgs, n_layers: int | None = None) -> list[Stage]:
    return [Stage("smart_alternating", train.epochs, train.lr, _all_params, smart_alternating_loss)]


def metabert(train, args: MetaBertArgs, n_layers: int | None = None) -> list[Stage]:
    episode = args.support_size + args.query_size
    return [
        Stage("meta", args.meta_epochs, args.meta_lr or train.lr, _all_params,
              weighted_exits_loss(LAYER_WEIGHTS["uniform"]), metabert_gradient(args),
              batch_size=episode * args.meta_batch),
        Stage("joint", train.epochs, train.lr, _all_params, weighted_exits_loss(LAYER_WEIGHTS["uniform"])),
    ]


@dataclass(frozen=True)
class Strategy:
    """A training strategy as a record: its arguments, its stages and the traits the pipeline asks
    about (nothing checks a strategy by name)."""

    args: type[_Args]
    build: Callable[..., list[Stage]]
    lte_head: bool = False
    """The model needs a learned-to-exit head (besides any strategy with train.lte)."""
    dev_metrics: Callable[[Any], bool] = lambda args: False
    """(validated args) → whether it chooses each epoch's objective from dev metrics."""


STRATEGIES: dict[str, Strategy] = {
    "two_stage": Strategy(TwoStageArgs, two_stage),
    "joint": Strategy(JointArgs, joint),
    "alternating": Strategy(AlternatingArgs, alternating),
    "self_distill": Strategy(SelfDistillArgs, self_distill),
    "romebert": Strategy(RomeBertArgs, romebert),
    "lte": Strategy(LteArgs, lte, lte_head=True),
    "csdbert": Strategy(CsdBertArgs, csdbert),
    "slf": Strategy(SlfArgs, slf, dev_metrics=lambda args: args.refine == "smart_alternating"),
    "smart_alternating": Strategy(SmartAlternatingArgs, smart_alternating, dev_metrics=lambda args: True),
    "metabert": Strategy(MetaBertArgs, metabert),
    "finetune": Strategy(NoArgs, finetune),
    "head_only": Strategy(NoArgs, head_only),
}


def needs_dev_metrics(train) -> bool:
    """Strategies that choose each epoch's objective from dev metrics (Smart Alternating)."""
    strategy = STRATEGIES[train.strategy]
    return strategy.dev_metrics(strategy.args.model_validate(train.args))


def with_lte(stages: list[Stage]) -> list[Stage]:
    """train.lte: the LTE loss J_i joins every stage that trains all exit heads or the early ones
    (L_i + J_i, BERTer), and that stage trains the LTE head too; stages with their own gradient rule
    (RomeBERT's GR, MAML's meta phase) and final-exit-only stages are left as they are."""
    out, joined = [], 0
    for stage in stages:
        if stage.gradient is None and stage.parts is None and getattr(stage.trains, "exit_heads", "") in ("all", "early"):
            def trains(model, select=stage.trains):
                return select(model) + list(model.lte.parameters())

            stage = replace(stage, name=f"{stage.name}+lte", trains=trains, loss=plus_lte(stage.loss))
            joined += 1
        out.append(stage)
    if not joined:
        raise ValueError("train.lte: no stage of this strategy trains the exit heads with a loss the "
                         "LTE term can join; use strategy \"lte\" or another strategy")
    return out


def validate_strategy(name: str, args: dict[str, Any]) -> _Args:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    model = STRATEGIES[name].args
    try:
        return model.model_validate(args)
    except ValidationError as err:
        first = err.errors()[0]
        key = "args." + ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ValueError(f"{key}: not an argument of strategy {name!r}; "
                             f"its arguments: {', '.join(model.model_fields) or 'none'}") from None
        raise ValueError(f"{key}: {first['msg']}") from None


def build_stages(train, task: str = "", n_layers: int | None = None) -> list[Stage]:
    """The stages of ``train.strategy`` with its validated arguments (and the LTE term when train.lte)."""
    strategy = STRATEGIES[train.strategy]
    args = strategy.args.model_validate(train.args)
    if "task" in strategy.args.model_fields and not args.task:
        args = args.model_copy(update={"task": task})
    stages = strategy.build(train, args, n_layers)
    return with_lte(stages) if getattr(train, "lte", False) and not strategy.lte_head else stages


def needs_lte_head(train) -> bool:
    return STRATEGIES[train.strategy].lte_head or bool(getattr(train, "lte", False))
