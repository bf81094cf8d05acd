"""Atomic file writes: a result file is either the old version or the complete new one, never half."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        if os.path.exists(tmp):  # mkstemp makes 0600; a result file gets the mode any new file gets here
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def swap_folder(new: Path, folder: Path, old: Path | None = None) -> None:
    """Replace ``folder`` by the complete folder ``new``: ``folder`` → ``old``, ``new`` → ``folder``, then
    ``old`` removed. A kill between the two renames leaves ``old`` and no ``folder``, which
    ``recover_swap`` (called by every reader and the next writer) moves back."""
    folder = Path(folder)
    old = Path(old) if old is not None else swapped_out(folder)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def recover_swap(folder: Path, old: Path | None = None) -> None:
    """Undo a swap cut short between its renames: ``old`` back to ``folder`` when ``folder`` is missing,
    else the left-over ``old`` removed."""
    folder = Path(folder)
    old = Path(old) if old is not None else swapped_out(folder)
    if old.exists():
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, folder)


def swapped_out(folder: Path) -> Path:
    """Where ``swap_folder`` keeps the folder it replaces until the new one is in place."""
    return folder.parent / f".{folder.name}.replaced"


def _umask() -> int:
    try:  # Linux says it without changing it (threads may be creating files meanwhile)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_csv(path: Path, frame) -> None:
    """A pandas frame as CSV, atomically (6 significant digits)."""
    atomic_write(path, lambda p: frame.to_csv(p, index=False, float_format="%.6g"))
