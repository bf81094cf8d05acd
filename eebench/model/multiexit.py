"""MultiExitModel: an encoder with one exit head after every layer.

``forward`` returns every exit's logits and the per-layer signals policies need. It never decides
to exit: exit policies are pure functions over these outputs (eebench.policies).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from eebench.model.signals import centered_gram, linear_cka


class ExitHead(nn.Module):
    """DeeBERT's off-ramp: pooler (dense + tanh) → dropout → linear.

    ``pooling="first"`` pools the first token as BERT's pooler does (DeeBERT); ``"mean"`` averages
    the real (unmasked) tokens, which suits encoders trained with mean pooling (e.g. MiniLM)."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, pooling: str = "first"):
        super().__init__()
        if pooling not in ("first", "mean"):
            raise ValueError(f"pooling must be 'first' or 'mean', not {pooling!r}")
        self.pooling = pooling
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # hidden Shape: [B, T, H]; mask Shape: [B, T] → [B, H]
        if self.pooling == "first":
            token = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            token = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.activation(self.dense(token))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool(hidden, mask)  # Shape: [B, H]
        return self.classifier(self.dropout(pooled)), pooled  # Shape: [B, C], [B, H]


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


class MultiExitModel(nn.Module):
    def __init__(self, backbone: nn.Module, num_labels: int, pooling: str = "first",
                 dropout: float | None = None, lte: bool = False):
        super().__init__()
        config = backbone.config
        self.backbone = backbone
        self.num_layers = _config_int(config, "num_hidden_layers", "n_layers", "num_layers")
        hidden = _config_int(config, "hidden_size", "dim", "d_model")
        if dropout is None:
            dropout = float(getattr(config, "hidden_dropout_prob", getattr(config, "dropout", 0.1)))
        self.num_labels = num_labels
        self.heads = nn.ModuleList(
            ExitHead(hidden, num_labels, dropout, pooling) for _ in range(self.num_layers)
        )
        # BERxiT/BERTer learned-to-exit: one linear + sigmoid shared by all exits, on the pooled output
        self.lte = nn.Linear(hidden, 1) if lte else None
        self._adopt_pretrained_pooler()

    def _adopt_pretrained_pooler(self) -> None:
        """Initialise every head's pooler from the backbone's pretrained pooler, then drop it
        (the final exit's head plays its role, as in DeeBERT)."""
        pooler = getattr(self.backbone, "pooler", None)
        dense = getattr(pooler, "dense", None)
        if isinstance(dense, nn.Linear):
            for head in self.heads:
                if head.dense.weight.shape == dense.weight.shape:
                    head.dense.load_state_dict(dense.state_dict())
        if pooler is not None:
            self.backbone.pooler = None

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings (before position/segment embeddings), Shape: [B, T, H]: what SMART perturbs."""
        return self.backbone.get_input_embeddings()(input_ids)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, backbone_grad: bool = True,
                inputs_embeds: torch.Tensor | None = None, with_cka: bool = False) -> ExitOutputs:
        """All exits at once. ``backbone_grad=False`` runs the encoder without autograd (frozen stage);
        ``with_cka`` adds the CKA similarity of consecutive layers (CsdBERT's exit signal)."""
        kwargs = {"attention_mask": attention_mask}
        if inputs_embeds is not None:
            kwargs["inputs_embeds"] = inputs_embeds
        else:
            kwargs["input_ids"] = input_ids
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        ctx = contextlib.nullcontext() if backbone_grad else torch.no_grad()
        with ctx:
            out = self.backbone(**kwargs, output_hidden_states=True, return_dict=True)
        hidden_states = out.hidden_states[1:]  # L tensors, Shape: [B, T, H]; [0] is the embeddings
        assert len(hidden_states) == self.num_layers, (len(hidden_states), self.num_layers)
        logits, pooled = zip(*(head(h, attention_mask) for head, h in zip(self.heads, hidden_states)))
        pooled = torch.stack(pooled, 1)
        lte = torch.sigmoid(self.lte(pooled)).squeeze(-1) if self.lte is not None else None
        first = torch.stack([h[:, 0] for h in hidden_states], 1)
        cka = None
        if with_cka:
            grams = [centered_gram(h, attention_mask) for h in hidden_states]
            cka = torch.stack([linear_cka(a, b) for a, b in zip(grams[:-1], grams[1:])], 1)
        return ExitOutputs(logits=torch.stack(logits, 1), pooled=pooled, first_token=first, lte=lte, cka=cka)
