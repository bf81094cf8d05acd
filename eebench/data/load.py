"""Load a task split from a local GLUE-format folder, the `datasets` hub, or the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eebench.data.examples import Examples, random_subset
from eebench.data.tasks import HUB_DEV_SEED, TaskSpec
from eebench.errors import MissingData, UserError
from eebench.paths import data_root
from eebench.recipe import TaskConfig


def load_split(spec: TaskSpec, cfg: TaskConfig, split: str) -> Examples:
    """The examples of one split, with the recipe's subsets and held-out dev applied."""
    _check_split(spec, cfg, split)
    if cfg.dev_from_train and split in ("train", "dev"):
        train = _load_raw(spec, cfg, "train")
        order = np.random.default_rng(cfg.subset_seed).permutation(len(train))
        if cfg.dev_from_train >= len(train):
            raise UserError(f"task.dev_from_train = {cfg.dev_from_train} leaves no training examples "
                            f"(train has {len(train)}); lower it")
        held = np.sort(order[: cfg.dev_from_train])
        rest = np.sort(order[cfg.dev_from_train:])
        examples = train.subset(held if split == "dev" else rest)
    else:
        examples = _load_raw(spec, cfg, split)
    n = cfg.train_subset if split == "train" else cfg.eval_subset
    return random_subset(examples, n, cfg.subset_seed)


def _check_split(spec: TaskSpec, cfg: TaskConfig, split: str) -> None:
    if split not in spec.splits:
        raise UserError(f"task {spec.name} has no split {split!r}; choose one of {', '.join(spec.splits)}")


def _load_raw(spec: TaskSpec, cfg: TaskConfig, split: str) -> Examples:
    if spec.own_hub:
        return load_from_hub(spec, split, cfg.revision)
    if spec.format is None:
        from eebench.data.synthetic import generate

        examples = generate(cfg.synthetic, split)
        examples.source = "synthetic"
        return examples
    fmt = spec.format
    if cfg.data_dir:
        return _read_local(spec, _local_file(spec, cfg, split), split)
    root = data_root()
    looked = fmt.folders(root, spec.folder) if root is not None else []
    for folder in looked:
        path = _find(spec, cfg, folder, split)
        if path is not None:
            return _read_local(spec, path, split)
    if spec.hub_is_other_data and not cfg.hub_fallback:  # never another data set in silence
        where = (f"looked under the data root {root} in {', '.join(str(f) for f in looked)}" if looked
                 else "no data root is set (--data-root DIR or EEBENCH_DATA)")
        raise MissingData(f"task {spec.name} split {split!r}: no {fmt.file_name(split)} ({where}); "
                          f"{spec.hub_is_other_data}: put the files there, or set task.hub_fallback = true "
                          f"to use the hub's data knowingly")
    if root is not None:
        try:
            return load_from_hub(spec, split, cfg.revision)
        except MissingData as err:
            raise MissingData(f"task {spec.name} split {split!r}: no {fmt.file_name(split)} under the data "
                              f"root {root} (looked in {', '.join(str(f) for f in looked)}) and no hub copy "
                              f"({getattr(err, 'reason', 'the task has no hub dataset')}); put the files there, or set "
                              f"task.data_dir / --data-dir") from None
    return load_from_hub(spec, split, cfg.revision)


def _find(spec: TaskSpec, cfg: TaskConfig, folder: Path, split: str) -> Path | None:
    """The split's file in a folder: task.files, else the format's name (and its fallback)."""
    if split in cfg.files:
        names = [cfg.files[split]]
    else:
        fallback = getattr(spec.format, "fallback", lambda s: None)(split)
        names = [spec.format.file_name(split)] + ([fallback] if fallback else [])
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _read_local(spec: TaskSpec, path: Path, split: str) -> Examples:
    examples = spec.format.read(spec, path, split)
    examples.source = str(Path(path).resolve())
    if not len(examples):
        raise UserError(f"{path}: no examples (only a header, or every row malformed); "
                        f"split {split!r} of task {spec.name} needs at least one row")
    return examples


def _local_file(spec: TaskSpec, cfg: TaskConfig, split: str) -> Path:
    folder = Path(cfg.data_dir)
    if not folder.is_dir():
        example = {"cs224n": "path/to/cs224n", "elue": f"path/to/elue/{spec.folder}"}.get(
            spec.format.family, f"path/to/glue/{spec.folder}")
        raise UserError(f"task.data_dir {folder} is not a folder; point it (or --data-dir) at the "
                        f"{spec.folder} folder, e.g. {example}")
    path = _find(spec, cfg, folder, split)
    if path is None:
        name = cfg.files.get(split, spec.format.file_name(split))
        raise MissingData(f"{folder / name} not found for split {split!r} of task {spec.name}; "
                          f"name the file with task.files.{split} = \"...\" or add it to {folder}")
    return path


def load_from_hub(spec: TaskSpec, split: str, revision: str | None = None) -> Examples:
    """The same examples through `datasets.load_dataset` (needs the hub or its cache). A task whose hub
    copy has no dev split (``hub_dev_from_train``) gets dev and train from a fixed split of the hub's train."""
    if spec.hub_dev_from_train and split in ("train", "dev"):
        train = _load_hub(spec, "train", revision)
        order = np.random.default_rng(HUB_DEV_SEED).permutation(len(train))
        held = np.sort(order[: spec.hub_dev_from_train] if split == "dev" else order[spec.hub_dev_from_train:])
        examples = train.subset(held)
        part = "held-out" if split == "dev" else "rest after"
        examples.source = f"{train.source} ({part} {spec.hub_dev_from_train} dev examples, seed {HUB_DEV_SEED})"
        return examples
    return _load_hub(spec, split, revision)


def _load_hub(spec: TaskSpec, split: str, revision: str | None) -> Examples:
    if spec.hub is None:
        raise MissingData(f"task {spec.name} has no hub dataset (no hub copy); set a data root (--data-root DIR or "
                          f"EEBENCH_DATA, with DIR/{spec.folder}/) or task.data_dir")
    hub_split = spec.hub_split(split)
    try:
        from datasets import load_dataset

        ds = load_dataset(*spec.hub, split=hub_split, **({"revision": revision} if revision else {}))
    except Exception as err:  # network, auth and cache errors all mean: no hub copy here
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        named = f"split {hub_split!r}" + (f" (eebench's {split!r})" if hub_split != split else "")
        missing = MissingData(
            f"task {spec.name}: could not load {'/'.join(x for x in spec.hub if x)} {named} from the hub: "
            f"{reason}; set a data root (--data-root DIR or EEBENCH_DATA, with DIR/{spec.folder}/) or "
            f"task.data_dir (or --data-dir) to a folder of the task's files")
        missing.reason = reason
        raise missing from None
    a, b = spec.hub_fields
    where = f"hub data set {spec.hub[0]} split {hub_split!r}"
    for field in (a, b) if spec.own_hub else ():
        if field is not None and field not in ds.column_names:
            raise UserError(f"{where}: no {field!r} field (found {', '.join(ds.column_names)}); set task.text")
    if spec.own_hub and spec.hub_label not in ds.column_names:
        if split in ("train", "dev"):
            raise UserError(f"{where}: no {spec.hub_label!r} field (found {', '.join(ds.column_names)}); set task.label")
        labels = np.full(len(ds), -1)  # an unlabelled test split
    else:
        labels = np.asarray(ds[spec.hub_label])
    if labels.dtype.kind in "US" and spec.labels is not None:  # class names (SciTail: "entails")
        labels = np.asarray([spec.labels.index(x) if x in spec.labels else -1 for x in labels])
        if spec.own_hub and (labels < 0).any():
            bad = str(np.asarray(ds[spec.hub_label])[np.flatnonzero(labels < 0)[0]])
            raise UserError(f"{where}: label {bad!r} is not in task.labels ({', '.join(spec.labels)}); list it there")
    elif spec.own_hub and spec.labels is not None and labels.size and labels.max() >= len(spec.labels):
        raise UserError(f"{where}: label id {int(labels.max())} but task.labels names {len(spec.labels)} classes; "
                        f"list them all")
    has_labels = not (labels.size and (labels < 0).all())  # GLUE test splits carry label -1
    keep = np.flatnonzero(labels >= 0) if has_labels and not spec.is_regression else np.arange(len(labels))
    text_a, text_b = list(ds[a]), list(ds[b]) if b else None  # SNLI: pairs without a gold label (−1) dropped
    return Examples(
        ids=[str(i) for i in keep],
        text_a=[text_a[i] for i in keep],
        text_b=[text_b[i] for i in keep] if b else None,
        labels=labels[keep].astype(np.float32 if spec.is_regression else np.int64) if has_labels else None,
        source=f"hub:{'/'.join(x for x in spec.hub if x)}:{hub_split}" + (f"@{revision}" if revision else ""),
    )
