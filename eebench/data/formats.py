"""Data formats behind one interface: a task names its format (eebench.data.tasks); the loader asks
the format which file holds a split, where under a data root to look, and to read it.

* ``GlueTsv``: the GLUE distribution (tab-separated, no quoting, header line except CoLA).
* ``Cs224n``: the CS224N minBERT files (tab-separated with CSV quoting, ``<prefix>-<split>.csv``).
* ``ElueTsv``: the ELUE benchmark's TSVs, by column position as ELUE's reader takes them (header line
  skipped, labelled test in ``test_full.tsv`` beside the unlabelled ``test.tsv``; BOM and CRLF allowed).

A file whose header has a label column is read as labelled; a split that must be labelled (train, dev,
an ELUE test_full) and is not is a one-line error."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eebench.data.examples import Examples
from eebench.errors import UserError

LABELLED = ("train", "dev", "dev_matched", "dev_mismatched")
"""Splits that are always labelled, whatever the format."""


def read_text(path: Path) -> str:
    """A data file's text (UTF-8, optional BOM); a decoding error names the byte and line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        start = err.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)  # utf-8-sig counts after the BOM
        line = raw[:start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {start}: {raw[start:start + 1]!r}); "
                        f"re-save the file as UTF-8") from None


_FULL_NUMBER = re.compile(r"^[-+]?(\d+(\.\d+)?|\.\d+)([eE][-+]?\d+)?$")


def parse_label(labels: tuple[str, ...] | None, raw: str, path: Path, lineno: int) -> float | int:
    """A label field: a class name or id (classification), a number (regression, labels None)."""
    raw = raw.strip()
    try:
        if labels is None:
            if not _FULL_NUMBER.match(raw):  # "2." or "3e": a number cut short, not 2.0
                raise ValueError(raw)
            return float(raw)
        if raw in labels:
            return labels.index(raw)
        value = int(float(raw))
        if 0 <= value < len(labels):
            return value
    except ValueError:
        pass
    expected = "a number" if labels is None else f"one of {', '.join(labels)} or 0..{len(labels) - 1}"
    raise UserError(f"{path}:{lineno}: label {raw!r} is not {expected}")


def label_array(spec, labels: list) -> np.ndarray:
    return np.asarray(labels, dtype=np.float32 if spec.is_regression else np.int64)


def _need_label(path: Path, split: str, label: str, found: list[str], must: bool) -> None:
    if must:
        raise UserError(f"{path}: no {label!r} column in the header (found {', '.join(c for c in found if c) or 'none'})"
                        f"; split {split!r} must be labelled — is this the right file?")


def _need_text(path: Path, columns, cols, what: str) -> None:
    for col in cols:
        if col is not None and col not in columns:
            raise UserError(f"{path}: no {col!r} column in the header line "
                            f"(found {', '.join(c for c in columns if c) or 'none'}); is this the {what} file?")


@dataclass(frozen=True)
class GlueTsv:
    """Where the columns are in a GLUE-distribution TSV file."""

    text_a: str
    text_b: str | None
    label: str
    no_header: dict[str, int] = field(default_factory=dict)
    """For files without a header line (CoLA train/dev): column name → position."""
    headerless_splits: tuple[str, ...] = ()
    skip_malformed: bool = False
    """Skip rows with the wrong number of fields, naming them, as GLUE's QQP processor does (its train
    file has such a row, id 133273); every other task stops at the first one (file:line)."""
    family = "glue"

    def file_name(self, split: str) -> str:
        return f"{split}.tsv"

    def folders(self, root: Path, folder: str) -> list[Path]:
        return [root / folder, root / "glue" / folder]

    def read(self, spec, path: Path, split: str) -> Examples:
        """Tab-separated, no quote handling, like the GLUE processors. A row with the wrong number of
        fields (a damaged row, a file cut mid-line) is an error naming file:line, or skipped and named
        with ``skip_malformed`` (QQP). A header naming ``label`` (the ELUE copies of GLUE files) is as
        good as the GLUE name."""
        lines = read_text(path).splitlines()
        if split in self.headerless_splits:
            columns, rows, n_fields = dict(self.no_header), lines, None
        else:
            if not lines:
                raise UserError(f"{path}: empty file; expected a GLUE {spec.folder} TSV with a header line")
            header = lines[0].split("\t")
            columns, rows, n_fields = {name: i for i, name in enumerate(header)}, lines[1:], len(header)
        label = next((c for c in (self.label, "label") if c in columns), None)
        if label is None:
            _need_label(path, split, self.label, list(columns), split in LABELLED)
        _need_text(path, columns, (self.text_a, self.text_b), f"GLUE {spec.folder}")
        ids, text_a, text_b, labels, skipped = [], [], [], [], []
        expected = n_fields if n_fields is not None else max(columns.values()) + 1
        for lineno, line in enumerate(rows, start=1 if n_fields is None else 2):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != expected:
                if not self.skip_malformed:
                    raise UserError(f"{path}:{lineno}: {len(fields)} tab-separated fields, "
                                    f"{'the header has' if n_fields is not None else 'expected'} {expected}; fix the "
                                    f"row (a file cut short or edited? compare it with the original)")
                skipped.append(lineno)
                continue
            if label is not None:
                labels.append(parse_label(spec.labels, fields[columns[label]], path, lineno))
            ids.append(str(len(ids)))
            text_a.append(fields[columns[self.text_a]])
            if self.text_b is not None:
                text_b.append(fields[columns[self.text_b]])
        if skipped:
            from eebench.console import console

            console.print(f"note: {path}: skipped {len(skipped)} row(s) with the wrong number of fields (line "
                          f"{', '.join(map(str, skipped[:5]))}{', ...' if len(skipped) > 5 else ''}), as GLUE's "
                          f"{spec.folder} processor does", soft_wrap=True)
        return Examples(ids, text_a, text_b if self.text_b else None,
                        label_array(spec, labels) if label is not None else None)


@dataclass(frozen=True)
class ElueTsv:
    """An ELUE task's TSVs, read by column position as ELUE's own processors read them
    (fastnlp/ElasticBERT, ``elue/elue.py``): the header line is skipped, not matched by name, because
    the real files name their columns differently per task (MRPC keeps GLUE's ``Quality``, ``#1 ID``,
    ``#2 ID``, ``#1 String``, ``#2 String`` in dev.tsv; its test_full.tsv starts with ``label``).
    ``text`` / ``label`` are the positions in a labelled file (train, dev, test_full; label -1 = the
    last column); ``test_text`` the text positions in the unlabelled test.tsv, whose column 0 is the
    row's index. Fields are taken as they are, quotes included (``""u2""`` stays as written), as the
    reference reads them; the split ``test`` reads the labelled ``test_full.tsv`` when it is there."""

    text: tuple[int, ...]
    label: int
    test_text: tuple[int, ...]
    family = "elue"

    def file_name(self, split: str) -> str:
        return "test_full.tsv" if split == "test" else f"{split}.tsv"

    def fallback(self, split: str) -> str | None:
        """The file read when ``file_name(split)`` is absent: ELUE's unlabelled test.tsv."""
        return "test.tsv" if split == "test" else None

    def folders(self, root: Path, folder: str) -> list[Path]:
        return [root / "elue" / folder, root / folder]

    def read(self, spec, path: Path, split: str) -> Examples:
        lines = read_text(path).splitlines()
        if not lines:
            raise UserError(f"{path}: empty file; expected an ELUE {spec.folder} TSV with a header line")
        header = [h.strip() for h in lines[0].split("\t")]
        unlabelled = path.name == "test.tsv" or header[0] == "index"
        if unlabelled:
            _need_label(path, split, "label", header, split in LABELLED or path.name == "test_full.tsv")
        text = self.test_text if unlabelled else self.text
        needed = max(max(text), self.label) + 1 if not unlabelled else max(text) + 1
        if len(header) < needed:
            raise UserError(f"{path}: {len(header)} columns in the header line ({', '.join(header)}), ELUE's "
                            f"{spec.folder} files have at least {needed} ({self.layout(unlabelled)}); is this the "
                            f"ELUE {spec.folder} file?")
        ids, texts, labels = [], [[] for _ in text], []
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise UserError(f"{path}:{lineno}: {len(fields)} tab-separated fields, the header has "
                                f"{len(header)}; fix the row")
            if not unlabelled:
                labels.append(parse_label(spec.labels, fields[self.label], path, lineno))
            ids.append(fields[0].strip() if unlabelled else str(len(ids)))
            for column, position in zip(texts, text):
                column.append(fields[position])
        return Examples(ids, texts[0], texts[1] if len(texts) > 1 else None,
                        None if unlabelled else label_array(spec, labels))

    def layout(self, unlabelled: bool = False) -> str:
        """Where the fields are, in words (1-based, as a reader counts columns)."""
        if unlabelled:
            return f"index in column 1, text in column {' and '.join(str(i + 1) for i in self.test_text)}"
        label = "the last column" if self.label == -1 else f"column {self.label + 1}"
        return f"text in column {' and '.join(str(i + 1) for i in self.text)}, label in {label}"


@dataclass(frozen=True)
class Cs224n:
    """The CS224N minBERT files: tab-separated with CSV quoting despite the .csv name, a header line
    whose first field is the unnamed pandas index, one file per split named ``<prefix>-<split>.csv``."""

    text_a: str
    text_b: str | None
    label: str
    files: dict[str, str]
    """eebench split → file name."""
    family = "cs224n"

    def file_name(self, split: str) -> str:
        return self.files.get(split, f"{split}.csv")

    def folders(self, root: Path, folder: str) -> list[Path]:
        return [root / "cs224n", root]

    def read(self, spec, path: Path, split: str) -> Examples:
        """Rows of a labelled file whose label is empty are skipped (quora-dev has two), as the
        course's loader skips them."""
        text = read_text(path)
        if not text.strip():
            raise UserError(f"{path}: empty file; expected the CS224N {spec.name} file (tab-separated despite "
                            f"the .csv name, with a header line)")
        with io.StringIO(text, newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            columns = reader.fieldnames or []
            _need_text(path, columns, (self.text_a, self.text_b),
                       f"CS224N {spec.name} (tab-separated despite the .csv name)")
            labelled = self.label in columns
            if not labelled:
                _need_label(path, split, self.label, list(columns), split in LABELLED)
            ids, text_a, text_b, labels = [], [], [], []
            line = reader.line_num
            for row in reader:
                start, line = line + 1, reader.line_num
                _check_cs224n_row(path, row, start, line, len(columns))
                raw = (row.get(self.label) or "").strip() if labelled else None
                if labelled and not raw:
                    continue
                if labelled:
                    labels.append(parse_label(spec.labels, raw, path, reader.line_num))
                ids.append((row.get("id") or str(len(ids))).strip())
                text_a.append((row.get(self.text_a) or "").strip())
                if self.text_b is not None:
                    text_b.append((row.get(self.text_b) or "").strip())
        return Examples(ids, text_a, text_b if self.text_b else None,
                        label_array(spec, labels) if labelled else None)


def _check_cs224n_row(path: Path, row: dict, start: int, end: int, n_columns: int) -> None:
    """One physical line per row, one field per header column: an unclosed quote would otherwise
    swallow the rows after it, and a row cut short would be read with empty fields."""
    if any(isinstance(v, str) and "\n" in v for v in row.values()):
        raise UserError(f"{path}:{start}: a quote opened in this row is closed only on line {end} (the rows "
                        f"between are read as one text); close the quote or remove it")
    if None in row:  # fields beyond the header's
        raise UserError(f"{path}:{start}: {n_columns + len(row[None])} tab-separated fields, the header has "
                        f"{n_columns}; fix the row")
    missing = sum(v is None for v in row.values())
    if missing:
        raise UserError(f"{path}:{start}: {n_columns - missing} tab-separated fields, the header has {n_columns}; "
                        f"fix the row (a file cut short?)")


Format = GlueTsv | ElueTsv | Cs224n


@dataclass(frozen=True)
class OwnFiles:
    """A data set of one's own, declared in the recipe's [task] (format, text, label, labels, files):
    CSV, TSV or JSON Lines read by `datasets`' own builders (which cache each file as Arrow)."""

    kind: str  # csv, tsv, jsonl
    text_a: str
    text_b: str | None
    label: str
    family = "own"

    def file_name(self, split: str) -> str:
        return f"{split}.{self.kind}"

    def folders(self, root: Path, folder: str) -> list[Path]:
        return [root / folder]

    def _load(self, path: Path):
        from datasets import load_dataset
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
        builder, kwargs = {"csv": ("csv", {}), "tsv": ("csv", {"delimiter": "\t"}), "jsonl": ("json", {})}[self.kind]
        try:
            return load_dataset(builder, data_files=str(path), split="train", **kwargs)
        except Exception as err:  # the builders' parse errors: one line naming the file
            if "corresponds to no data" in str(err):  # a header and no rows
                return None
            reason = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
            raise UserError(f"{path}: not a readable {self.kind.upper()} file ({reason}); check its format "
                            f"against task.format = \"{self.kind}\"") from None

    def read(self, spec, path: Path, split: str) -> Examples:
        if Path(path).stat().st_size == 0:
            raise UserError(f"{path}: empty file; split {split!r} of task {spec.name} needs at least one row")
        ds = self._load(path)
        if ds is None:
            return Examples(ids=[], text_a=[], text_b=None, labels=None)
        columns = list(ds.column_names)
        for name, key in ((self.text_a, "text"), (self.text_b, "text")):
            if name is not None and name not in columns:
                raise UserError(f"{path}: no {name!r} field (found {', '.join(columns) or 'none'}); set task.{key} "
                                f"to the field that holds the text")
        first = 2 if self.kind in ("csv", "tsv") else 1  # the first data row's line (after a header)
        labels = None
        if self.label in columns:
            labels = label_array(spec, [parse_label(spec.labels, "" if v is None else str(v), path, first + i)
                                        for i, v in enumerate(ds[self.label])])
        elif split in LABELLED:
            raise UserError(f"{path}: no {self.label!r} field (found {', '.join(columns) or 'none'}); set task.label "
                            f"to the field that holds the label (split {split!r} must be labelled)")
        text = lambda col: ["" if v is None else str(v) for v in ds[col]]  # noqa: E731
        return Examples(ids=[str(i) for i in range(len(ds))], text_a=text(self.text_a),
                        text_b=text(self.text_b) if self.text_b else None, labels=labels)
