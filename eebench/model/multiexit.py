"""MultiExitModel: an encoder with one exit head after every layer.

``forward`` returns every exit's logits and the per-layer signals policies need. It never decides
to exit: exit policies are pure functions over these outputs (eebench.policies).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from eebench.model.families import Family, family_of
from eebench.model.similarity import centered_gram, cosine_logits, linear_cka


def last_real(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, Shape: [B] (right or left padding alike)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (mask.to(torch.long) * (positions + 1)).argmax(-1)


class ExitHead(nn.Module):
    """DeeBERT's off-ramp: pooler (dense + tanh) → dropout → linear.

    ``pooling="first"`` pools the first token as BERT's pooler does (DeeBERT); ``"mean"`` averages
    the real (unmasked) tokens, which suits encoders trained with mean pooling (e.g. MiniLM); ``"last"``
    pools the last real token, the one a decoder's classifier reads (it alone has seen the whole input)."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, pooling: str = "first"):
        super().__init__()
        if pooling not in ("first", "mean", "last"):
            raise ValueError(f"pooling must be 'first', 'mean' or 'last', not {pooling!r}")
        self.pooling = pooling
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # hidden Shape: [B, T, H]; mask Shape: [B, T] → [B, H]
        if self.pooling == "first":
            token = hidden[:, 0]
        elif self.pooling == "last":
            token = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_real(mask)]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            token = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.activation(self.dense(token))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool(hidden, mask)  # Shape: [B, H]
        return self.classifier(self.dropout(pooled)), pooled  # Shape: [B, C], [B, H]

    def pair_cosine(self, hidden: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """Cosine of the two sentences' representations (mean over each one's tokens → dense + tanh),
        Shape: [B]: the exit's score under the cosine pair loss (SBERT-style)."""
        m = mask.unsqueeze(-1).to(hidden.dtype)
        s = segments.unsqueeze(-1).to(hidden.dtype)
        u = (hidden * m * (1 - s)).sum(1) / (m * (1 - s)).sum(1).clamp(min=1.0)
        v = (hidden * m * s).sum(1) / (m * s).sum(1).clamp(min=1.0)
        u, v = self.activation(self.dense(u)), self.activation(self.dense(v))
        return nn.functional.cosine_similarity(u, v, dim=-1)


@dataclass
class ExitOutputs:
    logits: torch.Tensor  # Shape: [B, L, C]; C = 1 for regression
    pooled: torch.Tensor  # Shape: [B, L, H]; each exit head's pooled representation
    first_token: torch.Tensor  # Shape: [B, L, H]; each layer's first-token hidden state (encoder output)
    lte: torch.Tensor | None = None  # Shape: [B, L]; learned-to-exit certainty in (0, 1), when the model has one
    cka: torch.Tensor | None = None  # Shape: [B, L-1]; CKA(layer i, layer i+1), when asked for


def _config_int(config, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"{type(config).__name__} has none of {names}")


def head_pooling(backbone: nn.Module, pooling: str) -> str:
    """A decoder's classifier token is its last real one: "first" there means "last"."""
    family = family_of(backbone.config)
    return "last" if family is not None and family.decoder and pooling == "first" else pooling


def exit_heads(backbone: nn.Module, num_labels: int, pooling: str, dropout: float | None) -> nn.ModuleList:
    """One ExitHead per layer of ``backbone``, their poolers initialised from the family's pretrained
    pooler where the checkpoint has one (eebench.model.families)."""
    config = backbone.config
    hidden = _config_int(config, "hidden_size", "dim", "d_model", "n_embd")
    if dropout is None:
        dropout = float(getattr(config, "hidden_dropout_prob", getattr(config, "dropout", 0.1)))
    n_layers = _config_int(config, "num_hidden_layers", "n_layers", "num_layers")
    pooling = head_pooling(backbone, pooling)
    heads = nn.ModuleList(ExitHead(hidden, num_labels, dropout, pooling) for _ in range(n_layers))
    family = family_of(config)
    dense = family.pooler(backbone) if family is not None else getattr(getattr(backbone, "pooler", None), "dense", None)
    if isinstance(dense, nn.Linear):
        for head in heads:
            if head.dense.weight.shape == dense.weight.shape:
                head.dense.load_state_dict(dense.state_dict())
    return heads


def lte_head(backbone: nn.Module) -> nn.Linear:
    """BERxiT/BERTer learned-to-exit: one linear (+ sigmoid) shared by all exits, on the pooled output."""
    return nn.Linear(_config_int(backbone.config, "hidden_size", "dim", "d_model", "n_embd"), 1)


def drop_pooler(backbone: nn.Module) -> None:
    """The final exit's head plays the pretrained pooler's role (as in DeeBERT): drop the pooler."""
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None


def layer_states(backbone: nn.Module, family: Family | None, input_ids, attention_mask, token_type_ids,
                 position_ids, inputs_embeds) -> list[torch.Tensor]:
    """Every layer's output as the exit heads read it (after the family's final norm, if it has one),
    L tensors of Shape [B, T, H]. A known family is stepped one layer at a time, exactly as the
    engine steps it; another backbone runs its own forward."""
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "inputs_embeds": inputs_embeds}
    if token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if family is None:
        if inputs_embeds is not None:
            kwargs.pop("input_ids")
        else:
            kwargs.pop("inputs_embeds")
        out = backbone(**kwargs, output_hidden_states=True, return_dict=True)
        return list(out.hidden_states[1:])  # [0] is the embeddings
    hidden, ctx = family.embed(backbone, **kwargs)
    norm, states = family.final_norm(backbone), []
    for i, layer in enumerate(family.layers(backbone)):
        hidden = family.step(layer, i, hidden, ctx)
        states.append(norm(hidden) if norm is not None else hidden)
    return states


class MultiExitModel(nn.Module):
    def __init__(self, backbone: nn.Module, num_labels: int, pooling: str = "first",
                 dropout: float | None = None, lte: bool = False, pair_cosine: bool = False):
        super().__init__()
        self.backbone = backbone
        self.num_layers = _config_int(backbone.config, "num_hidden_layers", "n_layers", "num_layers")
        self.num_labels = num_labels
        self.family = family_of(backbone.config)
        self.heads = exit_heads(backbone, num_labels, pooling, dropout)
        self.lte = lte_head(backbone) if lte else None
        self.pair_cosine = pair_cosine
        """Cosine pair heads: logits from the cosine of the two sentences (eebench.train.losses)."""
        drop_pooler(backbone)

    @classmethod
    def view(cls, backbone: nn.Module, heads: nn.ModuleList, lte: nn.Module | None, num_labels: int,
             pair_cosine: bool = False) -> "MultiExitModel":
        """A single-task model over modules owned elsewhere (one task of a MultiTaskModel): training
        strategies, traces and the engine see an ordinary MultiExitModel sharing the backbone."""
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.backbone, model.heads, model.lte = backbone, heads, lte
        model.num_layers, model.num_labels, model.pair_cosine = len(heads), num_labels, pair_cosine
        model.family = family_of(backbone.config)
        return model

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings (before position/segment embeddings), Shape: [B, T, H]: what SMART perturbs."""
        return self.backbone.get_input_embeddings()(input_ids)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, backbone_grad: bool = True,
                inputs_embeds: torch.Tensor | None = None, with_cka: bool = False,
                position_ids: torch.Tensor | None = None, segment_ids: torch.Tensor | None = None) -> ExitOutputs:
        """All exits at once. ``backbone_grad=False`` runs the encoder without autograd (frozen stage);
        ``with_cka`` adds the CKA similarity of consecutive layers (CsdBERT's exit signal).
        ``position_ids`` restart per sentence for BERTer's embed-then-concatenate pairs;
        ``segment_ids`` (0/1 per token) are what cosine pair heads pool by."""
        ctx = contextlib.nullcontext() if backbone_grad else torch.no_grad()
        with ctx:
            hidden_states = layer_states(self.backbone, self.family, input_ids, attention_mask, token_type_ids,
                                         position_ids, inputs_embeds)
        assert len(hidden_states) == self.num_layers, (len(hidden_states), self.num_layers)
        logits, pooled = zip(*(head(h, attention_mask) for head, h in zip(self.heads, hidden_states)))
        pooled = torch.stack(pooled, 1)
        if self.pair_cosine:
            if segment_ids is None:
                raise ValueError("cosine pair heads need segment_ids (encode(..., segments=True))")
            cos = torch.stack([head.pair_cosine(h, attention_mask, segment_ids)
                               for head, h in zip(self.heads, hidden_states)], 1)  # Shape: [B, L]
            logits = cosine_logits(cos).unbind(1)
        lte = torch.sigmoid(self.lte(pooled)).squeeze(-1) if self.lte is not None else None
        first = torch.stack([h[:, 0] for h in hidden_states], 1)
        cka = None
        if with_cka:
            grams = [centered_gram(h, attention_mask) for h in hidden_states]
            cka = torch.stack([linear_cka(a, b) for a, b in zip(grams[:-1], grams[1:])], 1)
        return ExitOutputs(logits=torch.stack(logits, 1), pooled=pooled, first_token=first, lte=lte, cka=cka)


class MultiTaskModel(nn.Module):
    """One multi-exit backbone shared by several tasks, each with its own exit heads (and LTE head).
    ``task(name)`` is that task's MultiExitModel view; the state dict holds the backbone once."""

    def __init__(self, backbone: nn.Module, tasks: dict[str, dict], pooling: str = "first",
                 dropout: float | None = None):
        """tasks: name → {"num_labels": int, "lte": bool, "pair_cosine": bool}."""
        super().__init__()
        self.backbone = backbone
        self.family = family_of(backbone.config)
        self.task_info = {name: dict(info) for name, info in tasks.items()}
        self.heads = nn.ModuleDict({name: exit_heads(backbone, info["num_labels"], pooling, dropout)
                                    for name, info in tasks.items()})
        self.lte = nn.ModuleDict({name: lte_head(backbone) for name, info in tasks.items() if info.get("lte")})
        drop_pooler(backbone)
        self._views = {name: MultiExitModel.view(backbone, self.heads[name], self.lte[name] if name in self.lte else None,
                                                 info["num_labels"], info.get("pair_cosine", False))
                       for name, info in tasks.items()}
        self.num_layers = len(next(iter(self.heads.values())))

    def task(self, name: str) -> MultiExitModel:
        return self._views[name]
