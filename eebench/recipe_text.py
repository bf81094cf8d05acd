"""The recipe's text side: ``--set section.key=value`` parsing, the one-line wording of a validation
error (file or --set, dotted key, what is wrong, how to fix it) and the inline-TOML writer the recipe
generators use."""

from __future__ import annotations

import tomllib
from typing import Any

from pydantic import BaseModel, ValidationError

from eebench.errors import UserError
from eebench.recipe import Recipe


def toml_value(v: Any) -> str:
    """A Python value as inline TOML (the recipe generators under recipes/ write with it)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-5"`` → (["train", "lr"], 3e-05); values are TOML, bare words are strings."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected section.key=value, e.g. --set train.lr=3e-5")
    key, raw = text.split("=", 1)
    path = [part.strip() for part in key.split(".")]
    if not all(path):
        raise UserError(f"--set {text!r}: empty key part; expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word: a string, without the spaces around "="
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def describe_validation_error(err: ValidationError, source: str, overrides: list[str] | None = None) -> str:
    """One line: file (or the --set that caused it), dotted key, what is wrong and how to fix it."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    source = blame(source, key, overrides)
    kind, msg = first["type"], first["msg"]
    if kind == "extra_forbidden":
        section = _section_model(first["loc"][:-1])
        allowed = ", ".join(section.model_fields) if section else "see docs/recipes.md"
        text = f"{source}: unknown key {key!r}; allowed keys here: {allowed}"
    else:
        msg = msg.removeprefix("Value error, ")
        text = f"{source}: {key}: {msg}" if key else f"{source}: {msg}"
        if "input" in first and kind != "value_error":
            text += f" (got {first['input']!r})"
        if kind in ("list_type", "tuple_type") and isinstance(first.get("input"), str):
            items = ", ".join(f'"{x.strip()}"' for x in first["input"].split(",") if x.strip())
            text += f"; a list is written in TOML: {key}=[{items}] (quote it in the shell: '--set {key}=[{items}]')"
    more = len(err.errors()) - 1
    return text + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def _section_model(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Recipe
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def blame(source: str, key: str, overrides: list[str] | None) -> str:
    """The --set that set ``key`` (or a section above it), else the file."""
    for text in overrides or []:
        path = ".".join(parse_override(text)[0])
        if key == path or key.startswith(path + "."):
            return f"--set {text} (on {source})"
    return source
