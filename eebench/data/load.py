"""Load a task split from a local GLUE-format folder, the `datasets` hub, or the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eebench.data.examples import Examples, random_subset
from eebench.data.tasks import HUB_SPLITS, TaskSpec
from eebench.errors import MissingData, UserError
from eebench.paths import data_candidates, data_root
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
    if spec.name == "synthetic":
        from eebench.data.synthetic import generate

        return generate(cfg.synthetic, split)
    if cfg.data_dir:
        return _read_local(spec, _local_file(spec, cfg, split), split)
    root = data_root()
    if root is not None:
        looked = data_candidates(root, spec.folder, "cs224n" if spec.cs224n else "glue")
        for folder in looked:
            path = folder / cfg.files.get(split, _default_name(spec, split))
            if path.is_file():
                return _read_local(spec, path, split)
        try:
            return load_from_hub(spec, split)
        except MissingData as err:
            raise MissingData(f"task {spec.name} split {split!r}: no {_default_name(spec, split)} under the data "
                              f"root {root} (looked in {', '.join(str(f) for f in looked)}) and no hub copy "
                              f"({str(err).split('(', 1)[-1].split(')')[0]}); put the files there, or set "
                              f"task.data_dir / --data-dir") from None
    return load_from_hub(spec, split)


def _default_name(spec: TaskSpec, split: str) -> str:
    return spec.cs224n.files.get(split, f"{split}.csv") if spec.cs224n else f"{split}.tsv"


def _read_local(spec: TaskSpec, path: Path, split: str) -> Examples:
    examples = (read_cs224n if spec.cs224n is not None else read_glue_tsv)(spec, path, split)
    if not len(examples):
        raise UserError(f"{path}: no examples (only a header, or every row malformed); "
                        f"split {split!r} of task {spec.name} needs at least one row")
    return examples


def read_text(path: Path) -> str:
    """A data file's text (UTF-8, optional BOM); a decoding error names the byte and line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r}); "
                        f"re-save the file as UTF-8") from None


def _local_file(spec: TaskSpec, cfg: TaskConfig, split: str) -> Path:
    folder = Path(cfg.data_dir)
    if not folder.is_dir():
        example = "path/to/cs224n" if spec.cs224n else f"path/to/glue/{spec.folder}"
        raise UserError(f"task.data_dir {folder} is not a folder; point it (or --data-dir) at the "
                        f"{spec.folder} folder, e.g. {example}")
    path = folder / cfg.files.get(split, _default_name(spec, split))
    if not path.is_file():
        raise MissingData(f"{path} not found for split {split!r} of task {spec.name}; "
                        f"name the file with task.files.{split} = \"...\" or add it to {folder}")
    return path


def read_glue_tsv(spec: TaskSpec, path: Path, split: str) -> Examples:
    """Parse a GLUE-distribution TSV: tab-separated, no quote handling, like the GLUE processors.

    Rows with the wrong number of fields are skipped (the GLUE processors skip them too)."""
    layout = spec.tsv
    assert layout is not None, spec.name
    lines = read_text(path).splitlines()
    if split in layout.headerless_splits:
        columns, rows, n_fields = dict(layout.no_header), lines, None
    else:
        if not lines:
            raise UserError(f"{path}: empty file; expected a GLUE {spec.folder} TSV with a header line")
        header = lines[0].split("\t")
        columns, rows, n_fields = {name: i for i, name in enumerate(header)}, lines[1:], len(header)
    want_label = layout.label in columns
    if split == "train" and not want_label:
        raise UserError(f"{path}: no {layout.label!r} column in the header; a training file needs labels")
    for col in (layout.text_a, layout.text_b):
        if col is not None and col not in columns:
            raise UserError(f"{path}: no {col!r} column in the header line "
                            f"(found {', '.join(columns)}); is this the GLUE {spec.folder} file?")
    ids, text_a, text_b, labels = [], [], [], []
    for lineno, line in enumerate(rows, start=1 if n_fields is None else 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if (n_fields is not None and len(fields) != n_fields) or len(fields) <= max(columns.values()):
            continue  # malformed row (e.g. QQP train id 133273)
        if want_label:
            labels.append(_parse_label(spec, fields[columns[layout.label]], path, lineno))
        ids.append(str(len(ids)))
        text_a.append(fields[columns[layout.text_a]])
        if layout.text_b is not None:
            text_b.append(fields[columns[layout.text_b]])
    return Examples(ids, text_a, text_b if layout.text_b else None, _label_array(spec, labels) if want_label else None)


def read_cs224n(spec: TaskSpec, path: Path, split: str) -> Examples:
    """Parse a CS224N minBERT file: tab-separated with CSV quoting, header line, unnamed index column.

    Rows of a labelled file whose label is empty are skipped (quora-dev has two), as the course's
    loader skips them."""
    import csv
    import io

    layout = spec.cs224n
    assert layout is not None, spec.name
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        columns = reader.fieldnames or []
        for col in (layout.text_a, layout.text_b):
            if col is not None and col not in columns:
                raise UserError(f"{path}: no {col!r} column in the header line (found "
                                f"{', '.join(c for c in columns if c) or 'none'}); is this the CS224N "
                                f"{spec.name} file? (tab-separated despite the .csv name)")
        want_label = layout.label in columns
        if split == "train" and not want_label:
            raise UserError(f"{path}: no {layout.label!r} column in the header; a training file needs labels")
        ids, text_a, text_b, labels = [], [], [], []
        for row in reader:
            raw = (row.get(layout.label) or "").strip() if want_label else None
            if want_label and not raw:
                continue
            if want_label:
                labels.append(_parse_label(spec, raw, path, reader.line_num))
            ids.append((row.get("id") or str(len(ids))).strip())
            text_a.append((row.get(layout.text_a) or "").strip())
            if layout.text_b is not None:
                text_b.append((row.get(layout.text_b) or "").strip())
    return Examples(ids, text_a, text_b if layout.text_b else None, _label_array(spec, labels) if want_label else None)


def _parse_label(spec: TaskSpec, raw: str, path: Path, lineno: int) -> float | int:
    raw = raw.strip()
    try:
        if spec.labels is None:
            return float(raw)
        if raw in spec.labels:
            return spec.labels.index(raw)
        value = int(float(raw))
        if 0 <= value < len(spec.labels):
            return value
    except ValueError:
        pass
    expected = "a number" if spec.labels is None else f"one of {', '.join(spec.labels)} or 0..{len(spec.labels) - 1}"
    raise UserError(f"{path}:{lineno}: label {raw!r} is not {expected}")


def _label_array(spec: TaskSpec, labels: list) -> np.ndarray:
    return np.asarray(labels, dtype=np.float32 if spec.is_regression else np.int64)


def load_from_hub(spec: TaskSpec, split: str) -> Examples:
    """The same examples through `datasets.load_dataset` (needs the hub or its cache)."""
    if spec.hub is None:
        raise MissingData(f"task {spec.name} has no hub dataset (no hub copy); set a data root (--data-root DIR or "
                          f"EEBENCH_DATA, with DIR/{spec.folder}/) or task.data_dir")
    hub_split = HUB_SPLITS.get(split, split)
    try:
        from datasets import load_dataset

        ds = load_dataset(*spec.hub, split=hub_split)
    except Exception as err:  # network, auth and cache errors all mean: no hub copy here
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise MissingData(
            f"task {spec.name}: could not load {'/'.join(spec.hub)} split {hub_split!r} from the hub "
            f"({reason}); set a data root (--data-root DIR or EEBENCH_DATA, with DIR/{spec.folder}/) or "
            f"task.data_dir (or --data-dir) to a folder of the task's files") from None
    a, b = spec.hub_fields
    labels = np.asarray(ds["label"])
    has_labels = not (labels.size and (labels < 0).all())  # GLUE test splits carry label -1
    return Examples(
        ids=[str(i) for i in range(len(ds))],
        text_a=list(ds[a]),
        text_b=list(ds[b]) if b else None,
        labels=labels.astype(np.float32 if spec.is_regression else np.int64) if has_labels else None,
    )
