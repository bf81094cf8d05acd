"""The codebase stays walkable: no function in eebench/ over 60 lines, no import cycle between its
modules (imports inside functions included), no private name imported across modules."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "eebench"
MAX_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path):
    """(imported module, imported names) for every eebench import in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("eebench"):
                    yield alias.name, []
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("eebench")):
            yield node.args[0].value, []  # importlib.import_module("eebench.x"): an import like any other
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("eebench"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    yield (sub, []) if sub in MODULES else (base, [alias.name])


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


def test_no_private_name_is_imported_across_modules():
    found = [f"{name} imports {target}.{n}" for name, path in MODULES.items()
             for target, names in _imports(name, path) for n in names if n.startswith("_")]
    assert not found, found


def _module_aliases(name: str, path: Path) -> dict[str, str]:
    """Local names bound to eebench modules in the file: `import eebench.x as m`, `from eebench import x`."""
    aliases = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eebench"):
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def test_no_private_name_is_used_across_modules_through_an_attribute():
    """`module._name` on another eebench module is a private import by another route."""
    found = []
    for name, path in MODULES.items():
        aliases = _module_aliases(name, path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and aliases[node.value.id] != name):
                found.append(f"{name} uses {aliases[node.value.id]}.{node.attr}")
    assert not found, found


def test_maths_imports_nothing_of_eebench_above_it():
    """eebench.maths is pure maths: it may import numpy and its own modules, nothing of eebench above."""
    found = [f"{name} imports {target}" for name, path in MODULES.items() if name.startswith("eebench.maths")
             for target, _ in _imports(name, path) if not target.startswith("eebench.maths")]
    assert not found, found


def test_no_import_cycle_between_modules():
    graph = {name: {t for t, _ in _imports(name, path) if t in MODULES and t != name} for name, path in MODULES.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, [" -> ".join(c) for c in cycles]


@pytest.mark.parametrize("stage", ["trace", "evaluate", "calibrate", "speed", "finetune"])
def test_every_command_body_is_one_pipeline_module(stage):
    """The stage's body is a public function of its own pipeline module, and the CLI calls it there."""
    module = f"eebench.pipeline.{stage}"
    assert module in MODULES
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    public = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    assert stage in public or f"ensure_{stage}" in public, (module, sorted(public))
    users = [name for name, path in MODULES.items() if name != module
             and any(t == module or t.startswith(module + ".") for t, _ in _imports(name, path))]
    assert users, f"nothing imports {module}"


def test_the_cli_only_parses_and_dispatches():
    """cli.py stays a thin layer (under 350 lines), and the commands that work on a run folder open it
    through the one helper (eebench.run.command.command_run), never by hand."""
    path = MODULES["eebench.cli"]
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 350
    tree = ast.parse(path.read_text(encoding="utf-8"))
    called = {}
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        called[fn.name] = {getattr(c.func, "id", getattr(c.func, "attr", None))
                           for c in ast.walk(fn) if isinstance(c, ast.Call)}
    for command in ("evaluate", "calibrate", "speed", "report"):
        assert "command_run" in called[command], command
    for name, calls in called.items():
        assert not calls & {"open_run", "owned", "resolve_device"}, (name, calls & {"open_run", "owned"})


def test_one_module_name_per_concept():
    """No two modules share a file name (two trace.py, two signals.py once meant two concepts under one
    name); package __init__ files aside, and the two registries' own pairs: each registry's ``base``, and
    LTE, a method with both an exit policy and a training strategy."""
    registries = {"base", "lte"}
    seen: dict[str, list[str]] = {}
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            seen.setdefault(path.stem, []).append(name)
    shared = {stem: names for stem, names in seen.items() if len(names) > 1}
    assert {stem: names for stem, names in shared.items() if stem not in registries} == {}
    for stem in registries & set(shared):
        assert sorted(n.rsplit(".", 1)[0] for n in shared[stem]) == ["eebench.policies", "eebench.train.strategies"]
