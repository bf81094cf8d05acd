"""One explicit training loop over the strategy's stages, on `accelerate`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from transformers import get_linear_schedule_with_warmup

from eebench.console import console, progress
from eebench.data.encode import Encoded, train_loader
from eebench.recipe import TrainConfig
from eebench.train.smart import smart_regularizer
from eebench.train.strategies import Stage, StepContext

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


HEAD_PREFIXES = ("heads.", "lte.")


def param_groups(model, params: list[torch.nn.Parameter], weight_decay: float,
                 head_lr: float | None = None) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms; exit heads at ``head_lr`` when given."""
    chosen = {id(p) for p in params}
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if id(p) in chosen:
            head = head_lr is not None and name.removeprefix("module.").startswith(HEAD_PREFIXES)
            groups.setdefault((name.endswith(NO_DECAY), head), []).append(p)
    out = []
    for (no_decay, head), ps in groups.items():
        group = {"params": ps, "weight_decay": 0.0 if no_decay else weight_decay}
        if head:
            group["lr"] = head_lr
        out.append(group)
    return out


def train(
    model,
    stages: list[Stage],
    data: Encoded,
    cfg: TrainConfig,
    regression: bool,
    accelerator: Accelerator,
    log_path: Path,
    on_epoch_end: Callable[[str, int], dict] | None = None,
) -> list[dict]:
    """Train ``model`` stage by stage; returns one summary per epoch (also appended to ``log_path``).

    ``on_epoch_end(stage, epoch)`` checkpoints and may return dev metrics to record."""
    model = accelerator.prepare(model)
    history = []
    with progress() as bars, open(log_path, "a", encoding="utf-8") as log:
        for s, stage in enumerate(stages):
            if stage.epochs == 0:
                continue
            for p in model.parameters():
                p.requires_grad_(False)
            params = stage.trains(accelerator.unwrap_model(model))
            for p in params:
                p.requires_grad_(True)
            backbone_grad = any(p.requires_grad for p in accelerator.unwrap_model(model).backbone.parameters())
            head_lr = cfg.head_lr if backbone_grad else None
            optimizer = torch.optim.AdamW(param_groups(model, params, cfg.weight_decay, head_lr), lr=stage.lr)
            loader = train_loader(data, stage.batch_size or cfg.batch_size, cfg.seed + s)
            total = stage.epochs * len(loader)
            scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
            optimizer, loader, scheduler = accelerator.prepare(optimizer, loader, scheduler)
            task = bars.add_task(f"{stage.name}", total=total, info="")
            step = 0
            for epoch in range(1, stage.epochs + 1):
                model.train()
                started, running = time.perf_counter(), 0.0
                for batch in loader:
                    labels = batch.pop("labels")
                    batch.pop("index")
                    ctx = StepContext(regression, step, epoch, history)
                    inner = accelerator.unwrap_model(model)
                    if stage.gradient is None:
                        with accelerator.autocast():
                            out = model(**batch, backbone_grad=backbone_grad)
                            loss, parts = stage.loss(out, labels, ctx)
                            if cfg.smart.enabled:
                                reg = smart_regularizer(inner, batch, out.logits, regression, cfg.smart)
                                loss = loss + cfg.smart.lambda_s * reg
                                parts["loss_smart"] = reg.item()
                        accelerator.backward(loss)
                    else:  # the strategy runs the forward and sets the gradients (RomeBERT's GR, MAML)
                        parts = stage.gradient(inner, batch, labels, ctx, params)
                        loss = torch.tensor(parts["loss"])
                        if cfg.smart.enabled:
                            reg = smart_regularizer(inner, batch, inner(**batch).logits, regression, cfg.smart)
                            accelerator.backward(cfg.smart.lambda_s * reg)
                            parts["loss_smart"] = reg.item()
                    if cfg.max_grad_norm:
                        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    running += loss.item()
                    info = f"epoch {epoch}/{stage.epochs} loss {loss.item():.4f}"
                    bars.update(task, advance=1, info=info)
                    if not console.is_terminal and step % max(1, total // 10) == 0:
                        console.print(f"  {stage.name} step {step}/{total} {info}")  # logs, not a live bar
                    if step % 50 == 0 or step == total:
                        log.write(json.dumps({"stage": stage.name, "epoch": epoch, "step": step,
                                              "lr": scheduler.get_last_lr()[0], "loss": loss.item(),
                                              **parts}) + "\n")
                        log.flush()
                summary = {"stage": stage.name, "epoch": epoch, "train_loss": running / len(loader),
                           "seconds": round(time.perf_counter() - started, 2),
                           "examples_per_s": round(len(data) / (time.perf_counter() - started), 1)}
                if on_epoch_end is not None:
                    summary.update(on_epoch_end(stage.name, epoch) or {})
                log.write(json.dumps({"epoch_summary": summary}) + "\n")
                log.flush()
                history.append(summary)
                if "dev_layerwise" in summary:
                    row = " ".join(f"{v:.1f}" for v in summary["dev_layerwise"])
                    console.print(f"  {stage.name} epoch {epoch}: dev {summary['dev_metric']} per exit: {row}")
    return history
