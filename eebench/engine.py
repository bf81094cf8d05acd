"""A real early-exit inference engine: runs the encoder one layer at a time and stops computing for
examples that exit (batch size 1, or batched with row compaction: exited rows leave the batch).

Its exit decisions use the same per-layer signal functions as the offline policies (eebench.policies),
so for every policy that depends only on layers up to the exit, the engine's exits must equal the
trace simulation; `eebench.engine.agreement` and the tests check that. Works with BERT-family
encoders (BERT, RoBERTa, ELECTRA: `embeddings`, `encoder.layer`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from eebench.errors import UserError
from eebench.model.signals import centered_gram, linear_cka
from eebench.policies import entropy, get_policy, max_prob

@dataclass
class _State:
    """Per-row state of the stateful policies, compacted with the batch."""

    prev: np.ndarray | None = None  # previous layer's prediction (patience)
    run: np.ndarray | None = None  # current run length (patience, pcee)
    prev_gram: torch.Tensor | None = None  # previous layer's centred Gram matrix (cka)
    prev_sim: np.ndarray | None = None  # previous CKA similarity (cka)
    count: np.ndarray | None = None  # CKA count (cka)

    def keep(self, rows: np.ndarray) -> "_State":
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return _State(pick(self.prev), pick(self.run), pick(self.prev_gram), pick(self.prev_sim),
                      pick(self.count))


def row_signal(policy: str, values: list[float]) -> float:
    """Entropy or max-probability of one row of logits, in Python floats: the formulas of
    eebench.policies.entropy / max_prob (stable log-softmax, float64)."""
    m = max(values)
    shifted = [v - m for v in values]
    exps = [math.exp(v) for v in shifted]
    z = sum(exps)
    if policy == "max_prob":
        return 1.0 / z
    return math.log(z) - sum(e * x for e, x in zip(exps, shifted)) / z


class EarlyExitEngine:
    def __init__(self, model, policy: str, setting: dict, regression: bool = False, delta: float = 0.1):
        get_policy(policy)  # every policy depends only on layers up to the exit: the engine runs them all
        backbone = model.backbone
        if not (hasattr(backbone, "embeddings") and hasattr(getattr(backbone, "encoder", None), "layer")):
            raise UserError(f"the early-exit engine supports BERT-family encoders; "
                            f"{type(backbone).__name__} has no embeddings/encoder.layer")
        if getattr(model, "pair_cosine", False):
            raise UserError("the early-exit engine runs classifier heads; this model's pair task uses cosine "
                            "heads (task.pair_loss = \"cosine\"): measure it from its trace instead")
        if policy == "lte" and model.lte is None:
            raise UserError("policy 'lte' needs a model trained with an LTE head (train.strategy = \"lte\")")
        self.model, self.policy, self.setting = model.eval(), policy, setting
        self.regression, self.delta = regression, delta
        self.layers = list(backbone.encoder.layer)
        self.n_layers = len(self.layers)
        self.first_head = min(int(setting["layer"]), self.n_layers) if policy == "static" else 1
        # The exit heads' weights, read once: at batch size 1 a head is ~4 % of a MiniLM layer, and
        # the module calls around two small matmuls cost as much as the matmuls themselves.
        self.heads = [(h.pooling, h.dense.weight, h.dense.bias, h.classifier.weight, h.classifier.bias)
                      for h in model.heads]

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
        return F.linear(pooled, wc, bc), pooled

    def _threshold(self, i: int) -> float:
        t = self.setting["threshold"]
        return t[i - 1] if isinstance(t, (list, tuple)) else t

    def _decide(self, i: int, logits: torch.Tensor, pooled: torch.Tensor, hidden, mask, state: _State):
        """Which active rows exit after layer i (1-based)."""
        n = logits.shape[0]
        if i == self.n_layers:
            return np.ones(n, dtype=bool)
        p = self.policy
        if n == 1 and p in ("entropy", "max_prob"):  # one row: Python floats beat numpy's per-call cost
            signal = row_signal(p, logits[0].tolist())
            return np.array([signal < self._threshold(i) if p == "entropy" else signal >= self._threshold(i)])
        lg = logits.float().cpu().numpy()
        if p == "entropy":
            return entropy(lg) < self._threshold(i)
        if p == "max_prob":
            return max_prob(lg) >= self._threshold(i)
        if p == "lte":
            u = torch.sigmoid(self.model.lte(pooled)).squeeze(-1).float().cpu().numpy().astype(np.float64)
            return u >= self._threshold(i)
        if p == "static":
            return np.full(n, i >= int(self.setting["layer"]))
        if p == "patience":
            pred = lg[:, 0] if self.regression else lg.argmax(-1)
            if state.prev is None:
                same = np.zeros(n, dtype=bool)
            elif self.regression:
                same = np.abs(pred - state.prev) < self.delta
            else:
                same = pred == state.prev
            state.run = np.where(same, (state.run if state.run is not None else 0) + 1, 0)
            state.prev = pred
            return state.run >= self.setting["patience"]
        if p == "pcee":
            ok = max_prob(lg) >= self.setting["threshold"]
            state.run = np.where(ok, (state.run if state.run is not None else 0) + 1, 0)
            return state.run >= self.setting["patience"]
        # cka
        gram = centered_gram(hidden, mask)
        if state.count is None:
            state.count = np.zeros(n, dtype=np.int64)
        if state.prev_gram is not None:
            sim = linear_cka(state.prev_gram, gram).float().cpu().numpy().astype(np.float64)
            if state.prev_sim is not None:
                state.count = state.count + ((sim - state.prev_sim) < self.setting["theta"])
            state.prev_sim = sim
        state.prev_gram = gram
        return state.count >= self.setting["count"]

    @torch.inference_mode()
    def run(self, batch: dict) -> tuple[np.ndarray, torch.Tensor]:
        """Exit layer (1-based, Shape [B]) and the logits at the exit (Shape [B, C]) of every row."""
        hidden, mask4 = self._embed(batch)
        mask = batch["attention_mask"]
        b = hidden.shape[0]
        exits = np.zeros(b, dtype=np.int64)
        out_logits = torch.zeros(b, self.model.num_labels)
        active = np.arange(b)
        state = _State()
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
                out_logits[torch.from_numpy(active)] = logits.float()
                break
            if done.any():  # row compaction: exited rows leave the batch
                exits[active[done]] = i
                out_logits[torch.from_numpy(active[done])] = logits[torch.from_numpy(done)].float()
                keep = ~done
                rows = torch.from_numpy(np.flatnonzero(keep))
                hidden, mask, active = hidden[rows], mask[rows], active[keep]
                padded = bool((mask == 0).any())
                mask4 = mask4[rows] if mask4 is not None else None
                state = state.keep(keep)
        return exits, out_logits

    @torch.inference_mode()
    def run_full(self, batch: dict) -> torch.Tensor:
        """The baseline: every layer, and only the final exit's head (an ordinary fine-tuned model)."""
        hidden, mask4 = self._embed(batch)
        for layer in self.layers:
            hidden = self._layer(layer, hidden, mask4)
        mask = batch["attention_mask"]
        return self._head(self.n_layers, hidden, mask, bool((mask == 0).any()))[0]
