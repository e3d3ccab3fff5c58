"""The package's rooms: no import cycles among steerlab modules, no private names used across modules, and the
layering the README states (interference below the evaluation bench).

Read from the source with `ast`, so every import counts: module level, inside functions, and under TYPE_CHECKING
(a type-only import is still a dependency). `python tests/test_architecture.py` prints what the tests check.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "steerlab"

# Cycles that other work in progress is still breaking: listed here ONLY while they exist (the test fails once one
# is gone, so the exception cannot outlive the cycle).
KNOWN_CYCLES: list[set[str]] = []


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    defined_private: set[str] = field(default_factory=set)


@cache
def modules(src: Path = SRC) -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in sorted((src / ROOT).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found[name] = Module(name, path, tree, is_package, _private_definitions(tree))
    return found


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_definitions(tree: ast.Module) -> set[str]:
    """Private names a module defines: functions, classes, assignments, and attributes set on self/cls."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if _is_private(n)}


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    base = base if module.is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _reexports(known: dict[str, Module], package: str) -> dict[str, str]:
    """Names a package's __init__ takes from its own submodules: `from pkg import Name` depends on where Name lives."""
    module = known.get(package)
    if module is None or not module.is_package:
        return {}
    homes: dict[str, str] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source.startswith(package + "."):
                homes.update({(a.asname or a.name): source for a in node.names})
    return homes


def _targets(known: dict[str, Module], module: Module, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names if a.name in known)
        return
    source = _absolute(module, node)
    if source not in known:
        return
    for alias in node.names:
        if f"{source}.{alias.name}" in known:
            yield f"{source}.{alias.name}"  # a submodule
        else:
            yield _reexports(known, source).get(alias.name, source)


@cache
def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """steerlab module -> the steerlab modules it imports anywhere in its source."""
    known = modules(src)
    graph: dict[str, set[str]] = {}
    for name, module in known.items():
        edges: set[str] = set()
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update(t for t in _targets(known, module, node) if t != name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan), each one a set of modules in a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def private_uses(src: Path = SRC) -> list[str]:
    """`from steerlab.X import _name`, and `something._name` where `_name` is defined only in another module."""
    known = modules(src)
    elsewhere: dict[str, set[str]] = {}
    for name, module in known.items():
        for private in module.defined_private:
            elsewhere.setdefault(private, set()).add(name)
    found: list[str] = []
    for module in known.values():
        where = module.path.relative_to(src)
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom) and _absolute(module, node).startswith(ROOT):
                source = _absolute(module, node)
                found += [
                    f"{where}:{node.lineno} imports {a.name} from {source}" for a in node.names if _is_private(a.name)
                ]
            elif isinstance(node, ast.Attribute) and _is_private(node.attr):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                owners = elsewhere.get(node.attr, set())
                if owners and node.attr not in module.defined_private:
                    found.append(f"{where}:{node.lineno} uses .{node.attr} (defined in {', '.join(sorted(owners))})")
    return found


# Modules that register hooks only to READ block outputs (a hook that returns nothing changes nothing). Steering
# hooks, the ones that change activations, are installed in steerlab.steering and nowhere else.
# steerlab.experts reads which experts routers select (its router hooks return nothing).
READERS = {"steerlab.capture", "steerlab.experts", "steerlab.interference.readout", "steerlab.residual_norms"}


# Inside vLLM there are no hooks: steerlab.vllm.worker replaces each decoder layer's `forward` with one that calls
# the registered op `steerlab::steer_` (defined in steerlab.vllm.op). Those are the only other modules allowed to
# change activations, and these are the only two other ways the package does it.
CHANGERS = {"steerlab.vllm.worker": {"forward", "steer_"}, "steerlab.vllm.op": {"steer_"}}


def activation_changes(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the other ways it changes activations: assigning a module's `forward` ("forward"), calling the
    registered steering op `torch.ops.steerlab.steer_` ("steer_")."""
    found: dict[str, set[str]] = {}
    for name, module in modules(src).items():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Attribute) and node.attr == "forward" and isinstance(node.ctx, ast.Store):
                found.setdefault(name, set()).add("forward")
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "steer_"
                and ast.unparse(node.value) == "torch.ops.steerlab"
            ):
                found.setdefault(name, set()).add("steer_")
    return found


def hook_registrations(src: Path = SRC) -> dict[str, list[int]]:
    """Module -> lines where it calls a torch `register_*hook` method."""
    found: dict[str, list[int]] = {}
    for name, module in modules(src).items():
        for node in ast.walk(module.tree):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr.startswith("register_") and func.attr.endswith("hook"):
                found.setdefault(name, []).append(node.lineno)
    return found


def _returns_value(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    todo: list[ast.AST] = list(function.body)
    while todo:
        node = todo.pop()
        value = node.value if isinstance(node, ast.Return) else None
        if value is not None and not (isinstance(value, ast.Constant) and value.value is None):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):  # its own returns, not ours
            todo.extend(ast.iter_child_nodes(node))
    return False


def value_returning_hooks(module: str, src: Path = SRC) -> list[str]:
    """Hook functions (first parameter `module`/`_module`, torch's convention) that return a value: they replace
    the block's output (or inputs)."""
    found = []
    for node in ast.walk(modules(src)[module].tree):
        is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and bool(node.args.args)
        if is_def and node.args.args[0].arg in ("module", "_module") and _returns_value(node):
            found.append(f"{module}:{node.lineno} {node.name}")
    return found


# ----- the tests -----
SAMPLE = {
    "__init__.py": "from steerlab.a import A\n",
    "a.py": "from steerlab import b\n\nA = 1\n\n\ndef _helper():\n    return 1\n",
    "b.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from steerlab.c import C\n",
    "c.py": "C = 1\n\n\ndef late():\n    from . import A\n    from steerlab.a import _helper\n",
    "d.py": "import steerlab.c\nfrom steerlab import a\n\nx = a._helper()\n",
}


def test_the_checks_see_every_kind_of_import_and_private_use(tmp_path: Path) -> None:
    for file, text in SAMPLE.items():
        (tmp_path / ROOT).mkdir(exist_ok=True)
        (tmp_path / ROOT / file).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["steerlab.a"] == {"steerlab.b"}  # module level
    assert graph["steerlab.b"] == {"steerlab.c"}  # under TYPE_CHECKING
    assert graph["steerlab.c"] == {"steerlab.a"}  # in a function, relative, through the package's re-export
    assert graph["steerlab.d"] == {"steerlab.a", "steerlab.c"}
    assert cycles(graph) == [{"steerlab.a", "steerlab.b", "steerlab.c"}]
    assert [use.split(" ", 1)[1] for use in private_uses(tmp_path)] == [
        "imports _helper from steerlab.a",
        "uses ._helper (defined in steerlab.a)",
    ]


def test_no_import_cycles_among_steerlab_modules() -> None:
    found = cycles(import_graph())
    unexpected = [c for c in found if c not in KNOWN_CYCLES]
    assert not unexpected, f"import cycles: {[sorted(c) for c in unexpected]}"
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"these cycles are broken now: remove them from KNOWN_CYCLES: {[sorted(c) for c in gone]}"


def test_interference_sits_below_the_evaluation_bench() -> None:
    graph = import_graph()
    below = {m for m in graph if m == "steerlab.interference" or m.startswith("steerlab.interference.")}
    reached = set().union(*(reachable(graph, m) for m in below))
    assert not {m for m in reached if m.startswith("steerlab.evaluate")}, "interference must not import evaluate"
    assert "steerlab.interference.cross_effects" in reachable(graph, "steerlab.evaluate.suite_kit")


def test_no_private_names_are_used_across_modules() -> None:
    found = private_uses()
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_only_steering_installs_hooks_that_change_activations() -> None:
    registering = set(hook_registrations())
    assert "steerlab.steering" in registering and value_returning_hooks("steerlab.steering")  # the check sees them
    others = registering - {"steerlab.steering"}
    assert others <= READERS, f"hooks registered outside steerlab.steering: {sorted(others - READERS)}"
    changing = [hook for module in sorted(others) for hook in value_returning_hooks(module)]
    assert not changing, f"reading hooks that return a value (they would change the model's output): {changing}"


def test_only_the_vllm_worker_replaces_forwards_and_calls_the_steering_op(tmp_path: Path) -> None:
    (tmp_path / ROOT).mkdir()
    (tmp_path / ROOT / "x.py").write_text(
        "import torch\n\n\ndef f(layer, h):\n    layer.forward = print\n    torch.ops.steerlab.steer_(h)\n"
    )
    (tmp_path / ROOT / "y.py").write_text("def g(layer):\n    return layer.forward(1)\n")  # calling is reading
    assert activation_changes(tmp_path) == {"steerlab.x": {"forward", "steer_"}}  # the check sees both
    assert activation_changes() == CHANGERS


if __name__ == "__main__":
    for component in cycles(import_graph()):
        print("cycle:", " <-> ".join(sorted(component)))
    for use in private_uses():
        print("private:", use)
    for module, lines in sorted(hook_registrations().items()):
        print("hooks:", module, lines, value_returning_hooks(module) or "(reading only)")
