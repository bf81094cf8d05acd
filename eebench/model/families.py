"""Encoder families: how each `transformers` family embeds, runs layer i, masks and pools.

One small class per family, registered by `model_type`, and nothing about families anywhere else:
MultiExitModel.forward (training and the trace) and the early-exit engine both step through a family
one layer at a time, so the trace and the engine compute each layer the same way, and
tests/test_families.py checks every family's stepping against the model's own forward.

A family supplies:
  embed(backbone, ...)    → (hidden [B, T, H], ctx): the embedding output and what every layer needs
                            (masks, relative positions, rotary tables), built with transformers' public
                            mask builders (transformers.masking_utils), never a model's private helpers;
  layers(backbone)        → the L modules run in turn (ALBERT: its shared group, L times);
  step(layer, i, h, ctx)  → layer i's output (0-based i);
  take(ctx, rows)         → ctx without the exited rows (the engine's row compaction);
  final_norm(backbone)    → a norm applied before every exit head (pre-norm families), or None;
  pooler(backbone)        → the checkpoint's pooler dense the exit heads start from, or None;
  layer_macs(config, T)   → multiply-accumulates of one layer at T tokens, from its real shapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from eebench.errors import UserError


def take(value: Any, rows: torch.Tensor) -> Any:
    """``value`` without the exited rows: tensors with a batch axis are indexed, shared ones kept."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[rows.to(value.device)] if value.dim() > 0 and value.shape[0] > 1 else value
    if isinstance(value, tuple):
        return tuple(take(v, rows) for v in value)
    if isinstance(value, dict):
        return {k: take(v, rows) for k, v in value.items()}
    return value


def _out(value):
    return value[0] if isinstance(value, tuple) else value


def mask_skip(backbone) -> bool:
    """Whether transformers' mask builders may look at the mask to drop it when nothing is padded: a
    read of a device value on the host (``padding_mask.all()``). In eval mode (trace, engine) it buys the
    unmasked fast attention path at batch 1; in train mode the mask is always built, so a training step
    never waits for the device."""
    return not backbone.training


UNPADDED_MASKS: dict[tuple, Any] = {}
"""create_bidirectional_mask's answer for a batch with nothing padded, by (attention implementation, shape,
dtype, device): in eval mode it depends on nothing else. Serving batch size 1, the builder's Python
costs ~0.1 ms a request once the layers' weights have filled the CPU caches; a lookup costs ~10 µs."""


def _bidirectional(backbone, hidden, attention_mask):
    from transformers.masking_utils import create_bidirectional_mask

    def build():
        return create_bidirectional_mask(config=backbone.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                         allow_is_bidirectional_skip=mask_skip(backbone))

    if not mask_skip(backbone) or attention_mask is None or attention_mask.dim() != 2 or not bool(attention_mask.all()):
        return build()
    key = (backbone.config._attn_implementation, tuple(attention_mask.shape), hidden.dtype, hidden.device)
    if key not in UNPADDED_MASKS:
        if len(UNPADDED_MASKS) >= 512:
            UNPADDED_MASKS.clear()
        UNPADDED_MASKS[key] = build()
    return UNPADDED_MASKS[key]


def _attention_macs(tokens: np.ndarray, hidden: int) -> np.ndarray:
    return 2 * tokens**2 * hidden  # QKᵀ and AV over all heads (dense attention, as it runs)


class Family:
    """BERT and the families that share its layout (RoBERTa, XLM-R, ELECTRA, CamemBERT, ...)."""

    name = "bert"
    model_types: tuple[str, ...] = ("bert", "roberta", "xlm-roberta", "electra", "camembert", "xlm-roberta-xl",
                                    "data2vec-text", "ernie")
    decoder = False
    pooling = "first"  # the token a classifier reads in this family (decoders: the last real one)
    row_keys: tuple[str, ...] = ("mask",)  # ctx entries with a batch axis
    position_offset = 0  # position ids used before the first token (RoBERTa: padding_idx + 1)
    mask_builders: tuple[str, ...] = ("create_bidirectional_mask",)  # of transformers.masking_utils (check_engine_support)

    # ------------------------------------------------------------------------------------ running
    def embed(self, backbone, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
              inputs_embeds=None):
        hidden = backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                                     inputs_embeds=inputs_embeds)
        project = getattr(backbone, "embeddings_project", None)  # ELECTRA: embedding size ≠ hidden size
        if project is not None:
            hidden = project(hidden)
        return hidden, {"mask": _bidirectional(backbone, hidden, attention_mask)}

    def layers(self, backbone) -> list[nn.Module]:
        return list(backbone.encoder.layer)

    def step(self, layer, i: int, hidden, ctx):
        return _out(layer(hidden, ctx["mask"]))

    def take(self, ctx: dict, rows: torch.Tensor) -> dict:
        return {k: take(v, rows) if k in self.row_keys else v for k, v in ctx.items()}

    def final_norm(self, backbone) -> nn.Module | None:
        return None

    def pooler(self, backbone) -> nn.Linear | None:
        dense = getattr(getattr(backbone, "pooler", None), "dense", None)
        return dense if isinstance(dense, nn.Linear) else None

    # ------------------------------------------------------------------------------------ shapes
    def n_layers(self, config) -> int:
        return config.num_hidden_layers

    def hidden_size(self, config) -> int:
        return config.hidden_size

    def intermediate_size(self, config) -> int:
        return config.intermediate_size

    def max_positions(self, config) -> int | None:
        """How many tokens the position table admits (None: no absolute table)."""
        return getattr(config, "max_position_embeddings", None) and config.max_position_embeddings - self.position_offset

    def layer_macs(self, config, tokens: np.ndarray) -> np.ndarray:
        t, h, i = np.asarray(tokens, dtype=np.float64), self.hidden_size(config), self.intermediate_size(config)
        return t * (4 * h * h + 2 * h * i) + _attention_macs(t, h)


class Roberta(Family):
    name = "roberta"
    model_types = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "data2vec-text")

    def max_positions(self, config):
        return config.max_position_embeddings - (getattr(config, "pad_token_id", 1) or 0) - 1


class Albert(Family):
    """ALBERT: embeddings of size E projected to H, then one shared layer group applied L times; the
    pooler is a bare Linear (`pooler`)."""

    name, model_types = "albert", ("albert",)

    def embed(self, backbone, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
              inputs_embeds=None):
        hidden = backbone.embeddings(input_ids, position_ids=position_ids, token_type_ids=token_type_ids,
                                     inputs_embeds=inputs_embeds)
        mask = _bidirectional(backbone, hidden, attention_mask)
        return backbone.encoder.embedding_hidden_mapping_in(hidden), {"mask": mask}

    def layers(self, backbone):
        config, groups = backbone.config, backbone.encoder.albert_layer_groups
        per_group = config.num_hidden_layers / config.num_hidden_groups
        return [groups[int(i / per_group)] for i in range(config.num_hidden_layers)]

    def pooler(self, backbone):
        return backbone.pooler if isinstance(getattr(backbone, "pooler", None), nn.Linear) else None

    def layer_macs(self, config, tokens):
        # a group of inner_group_num layers runs at every one of the L steps: shared weights, real FLOPs
        return super().layer_macs(config, tokens) * config.inner_group_num


class DistilBert(Family):
    name, model_types = "distilbert", ("distilbert",)

    def embed(self, backbone, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
              inputs_embeds=None):
        hidden = backbone.embeddings(input_ids, inputs_embeds, position_ids)  # no segment embeddings
        return hidden, {"mask": _bidirectional(backbone, hidden, attention_mask)}

    def layers(self, backbone):
        return list(backbone.transformer.layer)

    def n_layers(self, config):
        return config.n_layers

    def hidden_size(self, config):
        return config.dim

    def intermediate_size(self, config):
        return config.hidden_dim


class DebertaV2(Family):
    """DeBERTa-v2/v3: disentangled attention over relative positions (shared by every layer and row),
    an optional convolution after the first layer."""

    name, model_types = "deberta-v2", ("deberta-v2",)
    mask_builders = ()  # its encoder builds its own (get_attention_mask)
    row_keys = ("mask", "embeddings", "input_mask")

    def embed(self, backbone, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
              inputs_embeds=None):
        if attention_mask is None:
            shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
            attention_mask = torch.ones(shape, dtype=torch.long, device=backbone.device)
        hidden = backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                                     mask=attention_mask, inputs_embeds=inputs_embeds)
        encoder = backbone.encoder
        return hidden, {"mask": encoder.get_attention_mask(attention_mask), "input_mask": attention_mask,
                        "embeddings": hidden, "relative_pos": encoder.get_rel_pos(hidden),
                        "rel_embeddings": encoder.get_rel_embedding(), "conv": encoder.conv}

    def step(self, layer, i, hidden, ctx):
        out = _out(layer(hidden, ctx["mask"], query_states=None, relative_pos=ctx["relative_pos"],
                         rel_embeddings=ctx["rel_embeddings"], output_attentions=False))
        if i == 0 and ctx["conv"] is not None:
            out = ctx["conv"](ctx["embeddings"], out, ctx["input_mask"])
        return out

    def max_positions(self, config):
        return config.max_position_embeddings if getattr(config, "position_biased_input", True) else None

    def layer_macs(self, config, tokens):
        t, h = np.asarray(tokens, dtype=np.float64), config.hidden_size
        base = super().layer_macs(config, tokens)
        if not getattr(config, "relative_attention", False):
            return base
        buckets = getattr(config, "position_buckets", -1)
        max_rel = getattr(config, "max_relative_positions", -1)
        if max_rel < 1:
            max_rel = config.max_position_embeddings
        span = buckets if buckets > 0 else max_rel
        types = getattr(config, "pos_att_type", None) or []
        per_type = 2 * span * h * h + t * 2 * span * h  # project the 2k relative embeddings; score against them
        return base + per_type * sum(1 for kind in ("c2p", "p2c") if kind in types)


class MPNet(Family):
    """MPNet: BERT's layout with a relative position bias computed once and added in every layer."""

    name, model_types = "mpnet", ("mpnet",)
    row_keys = ("mask", "position_bias")

    def embed(self, backbone, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
              inputs_embeds=None):
        hidden = backbone.embeddings(input_ids=input_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)
        return hidden, {"mask": _bidirectional(backbone, hidden, attention_mask),
                        "position_bias": backbone.encoder.compute_position_bias(hidden)}

    def step(self, layer, i, hidden, ctx):
        return _out(layer(hidden, ctx["mask"], ctx["position_bias"]))

    def max_positions(self, config):
        return config.max_position_embeddings - config.pad_token_id - 1


class ModernBert(Family):
    """ModernBERT: rotary positions, global and sliding-window (local) layers with a mask each, pre-norm
    layers and a final norm, applied before every exit head."""

    name, model_types = "modernbert", ("modernbert",)
    mask_builders = ("create_bidirectional_mask", "create_bidirectional_sliding_window_mask")
    row_keys = ("masks", "rotary")

    def embed(self, backbone, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
              inputs_embeds=None):
        from transformers.masking_utils import create_bidirectional_sliding_window_mask

        hidden = backbone.embeddings(input_ids=input_ids, inputs_embeds=inputs_embeds)
        if position_ids is None:
            position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        kwargs = {"config": backbone.config, "inputs_embeds": hidden, "attention_mask": attention_mask,
                  "allow_is_bidirectional_skip": mask_skip(backbone)}
        types = set(backbone.config.layer_types)
        masks = {"full_attention": _bidirectional(backbone, hidden, attention_mask)}
        if "sliding_attention" in types:
            masks["sliding_attention"] = create_bidirectional_sliding_window_mask(**kwargs)
        rotary = {kind: backbone.rotary_emb(hidden, position_ids, kind) for kind in types}
        return hidden, {"masks": masks, "rotary": rotary}

    def layers(self, backbone):
        return list(backbone.layers)

    def step(self, layer, i, hidden, ctx):
        kind = layer.attention_type
        return _out(layer(hidden, attention_mask=ctx["masks"][kind], position_embeddings=ctx["rotary"][kind]))

    def final_norm(self, backbone):
        return backbone.final_norm

    def pooler(self, backbone):
        return None

    def max_positions(self, config):
        return config.max_position_embeddings

    def layer_macs(self, config, tokens):
        t, h, i = np.asarray(tokens, dtype=np.float64), config.hidden_size, config.intermediate_size
        return t * (4 * h * h + 3 * h * i) + _attention_macs(t, h)  # gated MLP: Wi is H → 2I


class Decoder(Family):
    """Decoder-only classifiers (Llama, Qwen2, Mistral, ...): causal masks, rotary positions counted from
    each row's first real token (so left and right padding give the same numbers), the model's final
    norm before every exit head, and the last real token pooled."""

    name = "decoder"
    model_types = ("llama", "qwen2", "qwen3", "mistral", "gemma", "phi3", "olmo", "olmo2")
    mask_builders = ("create_causal_mask", "create_sliding_window_causal_mask")
    decoder, pooling = True, "last"
    row_keys = ("masks", "rotary", "position_ids")

    @staticmethod
    def positions(attention_mask, hidden):
        if attention_mask is None:
            return torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def _masks(self, backbone, hidden, attention_mask, position_ids):
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        config = backbone.config
        kwargs = {"config": config, "inputs_embeds": hidden, "attention_mask": attention_mask, "cache": None,
                  "position_ids": position_ids, "allow_is_causal_skip": mask_skip(backbone)}
        masks = {"full_attention": create_causal_mask(**kwargs)}
        if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
            masks["sliding_attention"] = create_sliding_window_causal_mask(**kwargs)
        return masks

    def embed(self, backbone, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
              inputs_embeds=None):
        hidden = inputs_embeds if inputs_embeds is not None else backbone.embed_tokens(input_ids)
        position_ids = self.positions(attention_mask, hidden)
        return hidden, {"masks": self._masks(backbone, hidden, attention_mask, position_ids),
                        "rotary": backbone.rotary_emb(hidden, position_ids=position_ids), "position_ids": position_ids}

    def layers(self, backbone):
        return list(backbone.layers[: backbone.config.num_hidden_layers])

    def _kind(self, layer, i, ctx):
        types = getattr(layer, "attention_type", None)
        return types if types in ctx["masks"] else "full_attention"

    def step(self, layer, i, hidden, ctx):
        mask = ctx["masks"][self._kind(layer, i, ctx)]
        return _out(layer(hidden, attention_mask=mask, position_embeddings=ctx["rotary"],
                          position_ids=ctx["position_ids"]))

    def final_norm(self, backbone):
        return backbone.norm

    def pooler(self, backbone):
        return None

    def max_positions(self, config):
        return None  # rotary: no table; the model's context length is its own business

    def layer_macs(self, config, tokens):
        t, h, i = np.asarray(tokens, dtype=np.float64), config.hidden_size, config.intermediate_size
        head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
        kv = (getattr(config, "num_key_value_heads", None) or config.num_attention_heads) * head_dim
        q = config.num_attention_heads * head_dim
        return t * (2 * h * q + 2 * h * kv + 3 * h * i) + 2 * t**2 * q  # gated MLP: gate, up, down


class Gpt2(Decoder):
    """GPT-2: learned absolute positions (counted from each row's first real token), pre-norm blocks,
    `ln_f` before every exit head."""

    name, model_types = "gpt2", ("gpt2",)
    row_keys = ("masks", "position_ids")

    def embed(self, backbone, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
              inputs_embeds=None):
        hidden = inputs_embeds if inputs_embeds is not None else backbone.wte(input_ids)
        position_ids = self.positions(attention_mask, hidden)
        masks = self._masks(backbone, hidden, attention_mask, position_ids)
        hidden = backbone.drop(hidden + backbone.wpe(position_ids))
        return hidden, {"masks": masks, "position_ids": position_ids}

    def layers(self, backbone):
        return list(backbone.h)

    def step(self, layer, i, hidden, ctx):
        return _out(layer(hidden, None, ctx["masks"]["full_attention"], position_ids=ctx["position_ids"]))

    def final_norm(self, backbone):
        return backbone.ln_f

    def max_positions(self, config):
        return config.n_positions

    def intermediate_size(self, config):
        return config.n_inner or 4 * config.hidden_size

    def layer_macs(self, config, tokens):
        return Family.layer_macs(self, config, tokens)


FAMILIES: dict[str, Family] = {}
for _family in (Family(), Roberta(), Albert(), DistilBert(), DebertaV2(), MPNet(), ModernBert(), Decoder(), Gpt2()):
    for _type in _family.model_types:
        FAMILIES[_type] = _family


def family_of(config) -> Family | None:
    """The family of a backbone's config, or None when eebench does not know how to step it (such a
    backbone is traced through its own forward; the engine refuses it)."""
    return FAMILIES.get(getattr(config, "model_type", None))


def check_engine_support(family: Family) -> None:
    """The engine builds attention masks with transformers' public mask builders (masking_utils); a
    transformers without the ones this family needs is one line when the engine is made, not an
    AttributeError mid-run."""
    import transformers

    try:
        import transformers.masking_utils as builders
    except ImportError:
        builders = None
    missing = [name for name in family.mask_builders if not hasattr(builders, name)]
    if missing:
        raise UserError(f"the early-exit engine builds {family.name} attention masks with transformers.masking_utils."
                        f"{', '.join(missing)}, which transformers {transformers.__version__} lacks: install the "
                        f"transformers eebench requires (pip install -e . pins it), or measure exits from the trace "
                        f"(eebench evaluate), which runs the model's own forward")


def known_families() -> str:
    return ", ".join(sorted(FAMILIES))


def shape_config(model_type: str, hidden: int, layers: int, heads: int, intermediate: int, vocab: int,
                 positions: int = 512, **extra) -> dict:
    """`AutoConfig.for_model(model_type, **shape_config(...))` arguments for a random model of the given
    shape in any known family (each family names its sizes its own way): tests and benchmarks build
    every family at one shape with it; a recipe's `model.config` takes the same names."""
    common = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": intermediate, "vocab_size": vocab, "max_position_embeddings": positions}
    by_type = {
        "distilbert": {"dim": hidden, "n_layers": layers, "n_heads": heads, "hidden_dim": intermediate,
                       "vocab_size": vocab, "max_position_embeddings": positions},
        "gpt2": {"n_embd": hidden, "n_layer": layers, "n_head": heads, "n_inner": intermediate, "vocab_size": vocab,
                 "n_positions": positions, "bos_token_id": min(50256, vocab - 1), "eos_token_id": min(50256, vocab - 1)},
        "roberta": {**common, "max_position_embeddings": positions + 2},
        "xlm-roberta": {**common, "max_position_embeddings": positions + 2},
        "mpnet": {**common, "max_position_embeddings": positions + 2},
        "electra": {**common, "embedding_size": max(hidden // 2, 8)},
        "albert": {**common, "embedding_size": max(hidden // 2, 8), "num_hidden_groups": 1},
        "deberta-v2": {**common, "relative_attention": True, "pos_att_type": ["p2c", "c2p"], "position_buckets": 16,
                       "max_relative_positions": positions, "position_biased_input": False,
                       "norm_rel_ebd": "layer_norm", "share_att_key": True},
        "modernbert": {**common, "global_attn_every_n_layers": 2, "local_attention": 16, "pad_token_id": 0,
                       "bos_token_id": 1, "eos_token_id": 2, "cls_token_id": 1, "sep_token_id": 2},
        "llama": {**common, "num_key_value_heads": max(heads // 2, 1), "pad_token_id": 0},
        "qwen2": {**common, "num_key_value_heads": max(heads // 2, 1), "pad_token_id": 0},
    }
    return {**by_type.get(model_type, common), **extra}
