"""`eebench evaluate`'s first step, and every command's that reads a split through the model: the
split's trace (one batched pass with all exits), stored in the run folder and reused while its key
(weights, examples, tokenization) matches; the key recomputed, the stale trace named, never reused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from eebench.console import console, progress
from eebench.data.load import load_split
from eebench.errors import UserError
from eebench.io import read_json, write_json
from eebench.recipe import Recipe
from eebench.run.folder import Run
from eebench.trace_data import Trace, compute_signals, load_trace, save_trace, stored_key, trace_key


def encode_split(recipe: Recipe, tokenizer, examples):
    """Tokenize a split as the recipe says (pair input mode; segment ids for cosine pair heads)."""
    from eebench.data.encode import encode

    return encode(tokenizer, examples, recipe.train.max_length, recipe.model.pair_input,
                  segments=recipe.task.pair_loss == "cosine")


def stamp_weights(run: Run) -> str:
    """Record the weights' sha256 in exits.json: part of every trace key."""
    h = hashlib.sha256()
    with open(run.model_dir / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    meta = read_json(run.model_dir / "exits.json")
    meta["weights_sha256"] = h.hexdigest()
    write_json(run.model_dir / "exits.json", meta)
    return meta["weights_sha256"]


def current_key(run: Run, fingerprint: str) -> str:
    """The key a trace made now of the examples with this fingerprint would have (the model's
    weights, the examples and the tokenization settings)."""
    meta_path = run.model_dir / "exits.json"
    if not meta_path.is_file():
        raise UserError(f"{run.dir} has no trained model yet (model/exits.json missing); "
                        f"run eebench finetune to completion first")
    try:
        meta = read_json(meta_path)
    except ValueError:
        raise UserError(f"{meta_path} is unreadable; the model folder is damaged: redo the run with "
                        f"eebench finetune RECIPE --overwrite") from None
    weights = meta.get("weights_sha256") or stamp_weights(run)
    return trace_key(weights, fingerprint, run.recipe.train.max_length, _input_mode(run.recipe))


def ensure_trace(run: Run, split: str, model=None, parallel=None, retrace: bool = False,
                 device: str | None = None) -> Trace:
    """The stored trace of ``split`` when its key matches, else a fresh one (and say why). With
    ``parallel`` every process traces its share of the batches and the main process saves the whole.
    ``retrace`` recomputes it whatever is stored (a damaged trace file). A model loaded here runs on
    ``device`` (eebench.device's rule: the accelerator when there is one), in the recipe's precision
    on a GPU; a model passed in runs where it is."""
    from eebench.data.encode import eval_loader

    path = run.trace_path(split)
    examples = _examples_or_stored(run, split, path, retrace)
    if isinstance(examples, Trace):
        return examples
    fingerprint = examples.fingerprint()  # one pass over the texts, shared by what follows
    key = current_key(run, fingerprint)
    old = None if retrace else stored_key(path)
    if old == key:
        _record_split(run, split, examples, fingerprint, parallel)
        return load_trace(path)
    if old is not None and model is None:  # results of a finished run: never replaced unasked
        raise UserError(f"{path} was made from {_what_changed(run, split, examples, fingerprint)} than there is now; its "
                        f"results and calibrations are kept: restore that data, or replace them with "
                        f"eebench evaluate {run.shown()} --split {split} --retrace")
    if old is not None:
        console.print(f"[yellow]trace {path} is stale[/] (model, data or max_length changed); recomputing")
    _record_split(run, split, examples, fingerprint, parallel)
    from eebench.model.build import load_model

    from eebench.device import apply_precision, describe, resolve_device

    if model is None:
        target = resolve_device(device)
        model, tokenizer, _ = load_model(run.model_dir, run.model_task)
        model.to(target)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(run.model_dir))
    on = next(model.parameters()).device
    precision = apply_precision(on, run.recipe.train)
    where = " ".join(describe(on).values())
    data = encode_split(run.recipe, tokenizer, examples)
    with progress() as bars:
        task = bars.add_task(f"trace {split} on {on}", total=len(data), info="")
        signals = compute_signals(model, eval_loader(data, run.recipe.train.eval_batch_size, on), on,
                                  bars, task, parallel=parallel, dtype=precision.dtype)
    trace = Trace(split, key, np.asarray(examples.ids), signals["logits"], examples.labels,
                  run.spec.is_regression, signals["lte"], signals["cka"], data.lengths(),
                  device=where, precision=precision.label, tf32=precision.tf32)
    if parallel is None or parallel.is_main:
        save_trace(path, trace)
    return trace


def _examples_or_stored(run: Run, split: str, path: Path, retrace: bool):
    """The split's examples; when its files cannot be found, the stored trace made from the very
    examples the run recorded (its fingerprint gives the trace's key without the files)."""
    from eebench.errors import MissingData
    from eebench.run.folder import run_status

    try:
        return load_split(run.spec, run.recipe.task, split)
    except MissingData as err:
        recorded = run_status(run.dir).data.get(split) if run.data_name is None else None
        if retrace or recorded is None or not path.is_file():
            raise
        if stored_key(path) != current_key(run, recorded["fingerprint"]):
            raise
        console.print(f"note: split {split} not found ({str(err).split(';')[0]}); its stored trace is of the data "
                      f"the run recorded ({recorded['source']}): using it", soft_wrap=True)
        return load_trace(path)


def _record_split(run: Run, split: str, examples, fingerprint: str, parallel) -> None:
    """Note in status.json where the split was read from and its fingerprint (the run's own data)."""
    from eebench.run.folder import run_status

    if run.data_name is None and (parallel is None or parallel.is_main) and (run.dir / "status.json").is_file():
        status = run_status(run.dir)
        if status.data.get(split, {}).get("fingerprint") != fingerprint:
            run.mark(data=status.record_split(split, examples, fingerprint))


def _what_changed(run: Run, split: str, examples, fingerprint: str) -> str:
    from eebench.run.folder import run_status

    recorded = run_status(run.dir).data.get(split)
    if recorded is None:
        return "another model, data or max_length"
    if recorded["fingerprint"] != fingerprint:
        return (f"other data ({recorded['n']} examples from {recorded['source']}; now {len(examples)} from "
                f"{examples.source})")
    return "another model or max_length"


def _input_mode(recipe: Recipe) -> str:
    """What besides max_length decides the tokens: empty for the default (keeps older trace keys)."""
    parts = [p for p in (recipe.model.pair_input if recipe.model.pair_input != "concat" else "",
                         "segments" if recipe.task.pair_loss == "cosine" else "") if p]
    return "|".join(parts)
