"""Where eebench finds what it ships and what the user has: the recipes root and the data root.

Recipes ship inside the package (``eebench/_recipes``: the repository's ``recipes/`` folder in a
checkout, a copy of it in an installed wheel), so ``recipes/...`` paths in table specs and on the
command line work from any folder. ``EEBENCH_RECIPES`` points at another recipes folder.
Data: a recipe names its task; ``task.data_dir`` (or ``--data-dir``) names a folder outright,
otherwise the data root (``--data-root DIR`` / ``EEBENCH_DATA``) is searched where the task's format
says (eebench.data.formats: GLUE ``DIR/<TASK>/`` and ``DIR/glue/<TASK>/``, ELUE ``DIR/elue/<TASK>/``,
CS224N ``DIR/cs224n/``) before the hub."""

from __future__ import annotations

import os
from pathlib import Path

RECIPES_ENV = "EEBENCH_RECIPES"
DATA_ENV = "EEBENCH_DATA"


def recipes_root() -> Path:
    env = os.environ.get(RECIPES_ENV)
    return Path(env) if env else Path(__file__).resolve().parent / "_recipes"


def resolve_recipe(path: str | Path) -> Path:
    """A recipe path as given when it exists, else ``recipes/<rest>`` under the recipes root."""
    path = Path(path)
    if path.exists() or path.is_absolute() or not path.parts or path.parts[0] != "recipes":
        return path
    shipped = recipes_root().joinpath(*path.parts[1:])
    return shipped if shipped.exists() else path


def display_recipe(path: Path) -> str:
    """``recipes/...`` for a shipped recipe (what a user types), else the path."""
    try:
        return str(Path("recipes") / Path(path).resolve().relative_to(recipes_root().resolve()))
    except ValueError:
        return str(path)


_CHOSEN: dict[str, Path] = {}
"""The data root this command was given (``--data-root``) or found in the run it works on; the process's
environment is only read (``EEBENCH_DATA``), never written: child processes get the root in the
environment their launcher builds for them (eebench.jobs)."""


def data_root() -> Path | None:
    """The data root: the command's own (``--data-root``, or the run's remembered one), else ``EEBENCH_DATA``."""
    if "root" in _CHOSEN:
        return _CHOSEN["root"]
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else None


def forget_data_root() -> None:
    """A new command starts from the environment's data root alone (eebench.cli_group, per invocation)."""
    _CHOSEN.clear()


def set_data_root(folder: str | Path | None) -> None:
    """Use ``folder`` as the data root for the rest of this command (None: keep the current one)."""
    if folder is not None:
        _CHOSEN["root"] = Path(folder).expanduser().resolve()


def child_env(env: dict | None = None) -> dict:
    """The environment for a child eebench process: this one's, with the data root in effect."""
    out = dict(os.environ if env is None else env)
    root = data_root()
    if root is not None:
        out[DATA_ENV] = str(root)
    return out
