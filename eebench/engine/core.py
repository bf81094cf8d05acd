"""A real early-exit inference engine: runs the encoder one layer at a time and stops computing for
examples that exit (batch size 1, or batched with row compaction: exited rows leave the batch).

Its exit decisions use the same per-layer signal functions as the offline policies (eebench.policies),
so for every policy that depends only on layers up to the exit, the engine's exits must equal the
trace simulation; tests/test_engine.py checks it for every registered policy. It steps the encoder
through its family (eebench.model.families: BERT, RoBERTa, XLM-R, ELECTRA, ALBERT, DistilBERT,
DeBERTa-v2/v3, ModernBERT, MPNet, and Llama / Qwen2 / GPT-2-style decoders), the same code that
computes the trace, so both run each layer identically; tests/test_families.py checks every family."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from eebench.device import autocast
from eebench.errors import UserError
from eebench.model.families import check_engine_support, known_families
from eebench.model.multiexit import last_real
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
        self.family = model.family
        if self.family is None:
            raise UserError(f"the early-exit engine steps the encoder families it knows ({known_families()}); "
                            f"model_type {getattr(backbone.config, 'model_type', None)!r} is not one: measure "
                            f"this model from its trace (eebench evaluate / calibrate) instead")
        check_engine_support(self.family)
        if getattr(model, "pair_cosine", False):
            raise UserError("the early-exit engine runs classifier heads; this model's pair task uses cosine "
                            "heads (task.pair_loss = \"cosine\"): measure it from its trace instead")
        if self.policy.needs == "lte" and model.lte is None:
            raise UserError("policy 'lte' needs a model trained with an LTE head (train.strategy = \"lte\")")
        self.model, self.setting = model.eval(), self.policy.complete(setting)
        self.regression = regression
        self.dtype = dtype  # autocast dtype of the layers (None: the weights' own); exit signals stay fp32
        self.layers = self.family.layers(backbone)
        self.norm = self.family.final_norm(backbone)  # pre-norm families: before every exit head
        self.n_layers = len(self.layers)
        self.first_head = self.policy.first_layer(self.setting, self.n_layers)
        # The exit heads' weights, read once: at batch size 1 a head is ~4 % of a MiniLM layer, and
        # the module calls around two small matmuls cost as much as the matmuls themselves.
        self.heads = [(h.pooling, h.dense.weight, h.dense.bias, h.classifier.weight, h.classifier.bias)
                      for h in model.heads]
        self.pools_padding = any(h[0] != "first" for h in self.heads)  # last / mean pooling read the mask

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _embed(self, batch):
        kwargs = {key: batch[key] for key in ("token_type_ids", "position_ids") if key in batch}
        return self.family.embed(self.model.backbone, input_ids=batch["input_ids"],
                                 attention_mask=batch["attention_mask"], **kwargs)

    def _head(self, i: int, hidden: torch.Tensor, mask: torch.Tensor, padded: bool):
        """Exit head i (1-based) in eval mode, as ExitHead.forward computes it: logits and pooled."""
        pooling, w, b, wc, bc = self.heads[i - 1]
        if pooling == "first":
            token = hidden.select(1, 0)
        elif pooling == "last":
            token = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_real(mask)] if padded else hidden.select(1, -1)
        elif padded:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            token = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        else:
            token = hidden.mean(1)
        # F.linear, as ExitHead computes it: a pre-transposed addmm reads the weights faster at batch 1
        # but sums in another order, and the engine's exits must equal the trace's bit for bit
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

    def _run_row(self, batch: dict) -> tuple[np.ndarray, torch.Tensor]:
        """One row, under a policy that reads only the row's logits (``Policy.row_step``: entropy,
        max_prob): the same layers, heads and decisions as ``_run`` without its per-layer LayerView, numpy
        arrays and row bookkeeping. Serving a stream, that Python runs with the CPU caches full of the
        layer's weights, where it cost ~50 µs per layer passed (docs/results.md)."""
        hidden, ctx = self._embed(batch)
        mask = batch["attention_mask"]
        padded = self.pools_padding and bool((mask == 0).any())
        exit_after, setting, step, norm, head = self.policy.row_step, self.setting, self.family.step, self.norm, self._head
        for i, layer in enumerate(self.layers, start=1):
            hidden = step(layer, i - 1, hidden, ctx)
            if i < self.first_head:
                continue
            logits = head(i, norm(hidden) if norm is not None else hidden, mask, padded)[0]
            if i == self.n_layers or exit_after(setting, i, logits.tolist()[0]):
                return np.array([i]), logits
        raise AssertionError("the last layer always exits")

    def _run(self, batch: dict) -> tuple[np.ndarray, torch.Tensor]:
        if self.policy.row_step is not None and batch["input_ids"].shape[0] == 1:
            return self._run_row(batch)
        hidden, ctx = self._embed(batch)
        mask = batch["attention_mask"]
        b, device = hidden.shape[0], hidden.device
        exits = np.zeros(b, dtype=np.int64)
        out_logits = torch.zeros(b, self.model.num_labels, device=device)  # fp32, on the model's device
        active = np.arange(b)
        state: dict = {}
        padded = bool((mask == 0).any())
        step, norm = self.family.step, self.norm
        for i, layer in enumerate(self.layers, start=1):
            hidden = step(layer, i - 1, hidden, ctx)
            if i < self.first_head:  # a static exit needs no head before its layer
                continue
            seen = norm(hidden) if norm is not None else hidden
            logits, pooled = self._head(i, seen, mask, padded)
            done = self._decide(i, logits, pooled, seen, mask, state)
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
                ctx = self.family.take(ctx, rows)
                state = keep_rows(state, keep, rows)  # tensors in the state live on the device too
        return exits, out_logits

    @torch.inference_mode()
    def run_full(self, batch: dict) -> torch.Tensor:
        """The baseline: every layer, and only the final exit's head (an ordinary fine-tuned model)."""
        return self.run_to(batch, self.n_layers)

    @torch.inference_mode()
    def run_to(self, batch: dict, k: int) -> torch.Tensor:
        """The static model cut at layer k (1-based): k layers and head k, no exit decisions. Timed at
        each example's own exit layer it is the floor any early-exit engine can reach (an oracle that
        knows the exit in advance); the engine's time over it is what deciding costs."""
        with autocast(self.device, self.dtype):
            hidden, ctx = self._embed(batch)
            for i, layer in enumerate(self.layers[:k]):
                hidden = self.family.step(layer, i, hidden, ctx)
            if self.norm is not None:
                hidden = self.norm(hidden)
            mask = batch["attention_mask"]
            return self._head(k, hidden, mask, bool((mask == 0).any()))[0]
