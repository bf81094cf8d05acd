"""Load a recipe: TOML (with ``--set`` overrides applied before validation), the schema
(eebench.recipe), then the checks against eebench's registries — the strategy and its arguments,
the exit policy and the task types it serves, multitask entries — each failure one line naming the
file (or the --set) and the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from eebench.errors import UserError
from eebench.recipe import Recipe
from eebench.recipe_text import apply_overrides, blame, describe_validation_error


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"recipe {path} is a folder, not a recipe file; give one of its .toml files "
                        f"(e.g. {path / 'quickstart.toml'}) or list them with `eebench recipes`")
    if not path.is_file():
        raise UserError(f"recipe {path} not found; list the shipped recipes with `eebench recipes` "
                        f"(e.g. recipes/quickstart.toml)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise UserError(f"recipe {path} is not a UTF-8 text file (byte {err.start}, line {line}); "
                        f"a recipe is a TOML file such as recipes/quickstart.toml") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: not valid TOML ({err}); fix the syntax at that line") from None
    if not data:
        raise UserError(f"recipe {path} is empty; a recipe names at least its task and model (see "
                        f"recipes/quickstart.toml and docs/recipes.md)")
    data = apply_overrides(data, overrides or [])
    return validate_recipe(data, source=str(path), overrides=overrides)


def validate_recipe(data: dict[str, Any], source: str = "<recipe>", overrides: list[str] | None = None) -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, source, overrides)) from None
    check_registries(recipe, source, overrides)
    return recipe


def _fail(source: str, overrides: list[str] | None, key: str, message: str) -> None:
    raise UserError(f"{blame(source, key, overrides)}: {key}: {message}")


def check_registries(recipe: Recipe, source: str = "<recipe>", overrides: list[str] | None = None) -> None:
    """What the schema cannot know: names and arguments against the registries. Also fills the
    default exit policy of a single-task recipe (entropy; patience on a regression task)."""
    from eebench.data.tasks import ALIASES, TASKS, get_task, task_spec
    from eebench.policies import POLICIES, default_policy
    from eebench.train.strategies import build_stages, validate_strategy

    try:
        validate_strategy(recipe.train.strategy, recipe.train.args)
    except ValueError as err:
        _fail(source, overrides, "train", str(err))
    if recipe.train.lte:
        try:
            build_stages(recipe.train, n_layers=2)  # raises when no stage can take the LTE term
        except ValueError as err:
            _fail(source, overrides, "train", str(err))
    if recipe.exit.policy is not None and recipe.exit.policy not in POLICIES:
        _fail(source, overrides, "exit.policy",
              f"unknown exit policy {recipe.exit.policy!r}; choose one of {sorted(POLICIES)}")
    known = lambda name: ALIASES.get(name.lower(), name.lower()) in TASKS  # noqa: E731  (the loader names others)
    if not recipe.tasks and (known(recipe.task.name) or recipe.task.format is not None):
        regression = task_spec(recipe.task).is_regression
        if recipe.exit.policy is None:
            recipe.exit.policy = default_policy(regression)
        try:
            POLICIES[recipe.exit.policy].check_task(regression, f"task {recipe.task.name}: ")
        except UserError as err:
            _fail(source, overrides, "exit.policy", str(err))
        _check_signals(recipe.exit.policy, recipe.train, source, overrides, "exit.policy", "")
    for i, t in enumerate(recipe.tasks):
        if t.strategy is not None or t.args is not None:
            try:
                validate_strategy(t.strategy or recipe.train.strategy, t.args if t.args is not None else {})
            except ValueError as err:
                _fail(source, overrides, f"tasks.{i} ({t.name})", str(err))
        if t.policy is not None and t.policy not in POLICIES:
            _fail(source, overrides, f"tasks.{i} ({t.name})",
                  f"unknown exit policy {t.policy!r}; choose one of {sorted(POLICIES)}")
        if t.policy is not None and known(t.name):
            try:
                POLICIES[t.policy].check_task(get_task(t.name).is_regression)
            except UserError as err:
                _fail(source, overrides, f"tasks.{i} ({t.name})", str(err))
        if known(t.name):  # what the task will exit by, checked now
            sub = task_recipe(recipe, t.name)
            _check_signals(sub.exit.policy, sub.train, source, overrides, f"tasks.{i} ({t.name}).policy", "")


def _check_signals(policy_name: str, train, source: str, overrides, key: str, why: str) -> None:
    """A policy that reads the LTE head needs a model with one: known from the recipe, so refused
    before training rather than at calibration hours later."""
    from eebench.policies import POLICIES
    from eebench.train.strategies import needs_lte_head

    policy = POLICIES.get(policy_name)
    if policy is not None and policy.needs == "lte" and not needs_lte_head(train):
        _fail(source, overrides, key, f"exit policy {policy_name!r} reads the LTE head{why}, which this model "
              f"would not have; add one with train.lte = true (or train.strategy = \"lte\"), or set another "
              f"policy (e.g. patience)")


def task_recipe(recipe: Recipe, name: str) -> Recipe:
    """The single-task recipe of one task of a multitask recipe (regression tasks exit by LTE)."""
    from eebench.data.tasks import get_task

    from eebench.train.strategies import needs_lte_head

    entry = next(t for t in recipe.tasks if t.name == name)
    probe = recipe.task_recipe(name, get_task(name).is_regression)  # its training settings (strategy, args)
    return recipe.task_recipe(name, get_task(name).is_regression, lte_head=needs_lte_head(probe.train)) \
        if entry.policy is None else probe
