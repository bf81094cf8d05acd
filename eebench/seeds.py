"""Seeds as a dimension of a run: ``--seeds N`` trains a recipe N times (train.seed, train.seed + 1, …)
into ``<run>-seed<S>`` folders; reports group such runs and show mean ± std over them."""

from __future__ import annotations

import re

import numpy as np

from eebench.recipe import Recipe

SEED_SUFFIX = re.compile(r"-seed\d+$")


def seed_overrides(recipe: Recipe, default_name: str, n: int) -> list[list[str]]:
    """The --set lines of each of ``n`` seeded runs of a recipe (its own seed first)."""
    name = SEED_SUFFIX.sub("", recipe.run_dir(default_name).name)
    base = recipe.train.seed
    return [[f"train.seed={base + k}", f'output.run_name="{name}-seed{base + k}"'] for k in range(n)]


def group_key(recipe: Recipe) -> str:
    """What runs of one setting share: the recipe without its seed, name and description."""
    data = recipe.model_dump(mode="json", exclude={"description": True, "output": {"run_name"},
                                                    "train": {"seed"}})
    return repr(data)


def group_runs(runs: list) -> dict[str, list]:
    """Runs grouped by setting (seeds of one recipe together), labelled by the run name without its
    seed suffix (and the strategy when the name does not say it). Runs of one setting are pooled
    only when their seeds all differ: two runs with one seed are repeats, not a spread, and each
    keeps a column of its own. Order: first appearance."""
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(group_key(run.recipe), []).append(run)
    pooled: list[list] = []
    for members in groups.values():
        seeds = [run.recipe.train.seed for run in members]
        pooled += [members] if len(set(seeds)) == len(seeds) else [[run] for run in members]
    labels = {}
    for members in pooled:
        name = SEED_SUFFIX.sub("", members[0].name) if len(members) > 1 else members[0].name
        strategy = members[0].recipe.train.strategy
        label = name if strategy in name else f"{name} ({strategy})"
        labels[label if label not in labels else f"{label} [{members[0].dir}]"] = members
    return labels


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value)."""
    v = np.asarray(list(values), dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def fmt(values, digits: int = 1) -> str:
    """"m ± s" over seeds (just "m" for one run); "–" when there is no value."""
    v = [x for x in values if x is not None and not np.isnan(x)]
    if not v:
        return "–"
    m, s = mean_std(v)
    return f"{m:.{digits}f}" if len(v) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"


