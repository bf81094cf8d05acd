"""A real early-exit inference engine: runs the encoder one layer at a time and stops computing for
examples that exit (batch size 1, or batched with row compaction: exited rows leave the batch).

Its exit decisions use the same per-layer signal functions as the offline policies (eebench.policies),
so for every policy that depends only on layers up to the exit, the engine's exits must equal the
trace simulation; tests/test_engine.py checks it for every registered policy. Works with BERT-family
encoders (BERT, RoBERTa, ELECTRA: `embeddings`, `encoder.layer`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from eebench.device import autocast
from eebench.errors import UserError
from eebench.policies import LayerView, get_policy


def keep_rows(state: dict, rows: np.ndarray, index: torch.Tensor) -> dict:
    """A policy's per-row state without the exited rows (numpy arrays and tensors alike)."""
    return {k: v[index.to(v.device)] if isinstance(v, torch.Tensor) else v[rows] if isinstance(v, np.ndarray) else v
            for k, v in state.items()}


class EarlyExitEngine:
    def __init__(self, model, policy: str, setting: dict, regression: bool = False, dtype: torch.dtype | None = None):
        self.policy = get_policy(policy)  # every policy depends only on layers up to the exit
        self.policy.check_task(regression)
        backbone = model.backbone
        if not (hasattr(backbone, "embeddings") and hasattr(getattr(backbone, "encoder", None), "layer")):
            raise UserError(f"the early-exit engine supports BERT-family encoders; "
                            f"{type(backbone).__name__} has no embeddings/encoder.layer")
        if getattr(model, "pair_cosine", False):
            raise UserError("the early-exit engine runs classifier heads; this model's pair task uses cosine "
                            "heads (task.pair_loss = \"cosine\"): measure it from its trace instead")
        if self.policy.needs == "lte" and model.lte is None:
            raise UserError("policy 'lte' needs a model trained with an LTE head (train.strategy = \"lte\")")
        self.model, self.setting = model.eval(), self.policy.complete(setting)
        self.regression = regression
        self.dtype = dtype  # autocast dtype of the layers (None: the weights' own); exit signals stay fp32
        self.layers = list(backbone.encoder.layer)
        self.n_layers = len(self.layers)
        self.first_head = self.policy.first_layer(self.setting, self.n_layers)
        # The exit heads' weights, read once: at batch size 1 a head is ~4 % of a MiniLM layer, and
        # the module calls around two small matmuls cost as much as the matmuls themselves.
        self.heads = [(h.pooling, h.dense.weight, h.dense.bias, h.classifier.weight, h.classifier.bias)
                      for h in model.heads]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _embed(self, batch):
        b = self.model.backbone
        kwargs = {"input_ids": batch["input_ids"]}
        for key in ("token_type_ids", "position_ids"):
            if key in batch:
                kwargs[key] = batch[key]
        hidden = b.embeddings(**kwargs)
        mask4 = b._create_attention_masks(batch["attention_mask"], None, hidden, None, None)[0]
        return hidden, mask4

    @staticmethod
    def _layer(layer, hidden, mask4):
        out = layer(hidden, mask4)
        return out[0] if isinstance(out, tuple) else out

    def _head(self, i: int, hidden: torch.Tensor, mask: torch.Tensor, padded: bool):
        """Exit head i (1-based) in eval mode, as ExitHead.forward computes it: logits and pooled."""
        pooling, w, b, wc, bc = self.heads[i - 1]
        if pooling == "first":
            token = hidden[:, 0]
        elif padded:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            token = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        else:
            token = hidden.mean(1)
        pooled = torch.tanh(F.linear(token, w, b))
        return F.linear(pooled, wc, bc).float(), pooled  # exit signals in fp32 whatever the model's dtype

    def _decide(self, i: int, logits: torch.Tensor, pooled: torch.Tensor, hidden, mask, state: dict):
        """Which active rows exit after layer i (1-based): the last layer always, else the policy's step."""
        if i == self.n_layers:
            return np.ones(logits.shape[0], dtype=bool)
        view = LayerView(i, self.n_layers, logits, pooled, hidden, mask, self.model, self.regression)
        return self.policy.step(self.setting, view, state)

    @torch.inference_mode()
    def run(self, batch: dict) -> tuple[np.ndarray, torch.Tensor]:
        """Exit layer (1-based, Shape [B]) and the logits at the exit (Shape [B, C], fp32, on the model's
        device) of every row."""
        with autocast(self.device, self.dtype):
            return self._run(batch)

    def _run(self, batch: dict) -> tuple[np.ndarray, torch.Tensor]:
        hidden, mask4 = self._embed(batch)
        mask = batch["attention_mask"]
        b, device = hidden.shape[0], hidden.device
        exits = np.zeros(b, dtype=np.int64)
        out_logits = torch.zeros(b, self.model.num_labels, device=device)  # fp32, on the model's device
        active = np.arange(b)
        state: dict = {}
        padded = bool((mask == 0).any())
        for i, layer in enumerate(self.layers, start=1):
            hidden = self._layer(layer, hidden, mask4)
            if i < self.first_head:  # a static exit needs no head before its layer
                continue
            logits, pooled = self._head(i, hidden, mask, padded)
            done = self._decide(i, logits, pooled, hidden, mask, state)
            if done.all():
                exits[active] = i
                if len(active) == b:
                    return exits, logits.float()
                out_logits[torch.from_numpy(active).to(device)] = logits.float()
                break
            if done.any():  # row compaction, on the device: exited rows leave the batch
                exits[active[done]] = i
                gone = torch.from_numpy(np.flatnonzero(done)).to(device, non_blocking=True)
                out_logits[torch.from_numpy(active[done]).to(device)] = logits[gone].float()
                keep = ~done
                rows = torch.from_numpy(np.flatnonzero(keep)).to(device, non_blocking=True)
                hidden, mask, active = hidden[rows], mask[rows], active[keep]
                padded = bool((mask == 0).any())
                mask4 = mask4[rows] if mask4 is not None else None
                state = keep_rows(state, keep, rows)  # tensors in the state live on the device too
        return exits, out_logits

    @torch.inference_mode()
    def run_full(self, batch: dict) -> torch.Tensor:
        """The baseline: every layer, and only the final exit's head (an ordinary fine-tuned model)."""
        with autocast(self.device, self.dtype):
            hidden, mask4 = self._embed(batch)
            for layer in self.layers:
                hidden = self._layer(layer, hidden, mask4)
            mask = batch["attention_mask"]
            return self._head(self.n_layers, hidden, mask, bool((mask == 0).any()))[0]
