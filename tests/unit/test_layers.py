"""The layering rules of docs/architecture.md, checked on the source (AST only).

    schemas  <-  pipelines  <-  jobs  (<- jobs.cli, the console entry, on top)

* no import circle among project modules (counting function-local imports,
  which only hide a circle);
* `schemas` imports no other project package;
* `pipelines` never imports `jobs`;
* nothing outside `jobs.cli` imports `jobs.cli`;
* a warehouse backend never imports another backend;
* no project module is imported inside a function (a hidden import is usually
  a circle being dodged, or a layer being crossed where nobody looks).

`importlib.import_module("...")` with a literal name counts as an import.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "pipelines", "jobs")
WAREHOUSE_BACKENDS = ("jobs.warehouse.duckdb", "jobs.warehouse.bigquery")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module `name` refers to (itself, or its longest module prefix)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for every import of
    a project module in `path`."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def add(name: str, line: int, local: bool) -> None:
        target = _resolve(name, modules)
        if target is not None and target != me:
            found.append((target, line, local))

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True)
                continue
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue  # annotations only: no import at run time
            if isinstance(child, ast.Import):
                for a in child.names:
                    add(a.name, child.lineno, local)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for a in child.names:
                    # `from pkg import mod` imports the module pkg.mod when there is one
                    full = f"{base}.{a.name}"
                    add(full if full in modules else base, child.lineno, local)
            elif (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                  and child.func.attr == "import_module" and child.args
                  and isinstance(child.args[0], ast.Constant) and isinstance(child.args[0].value, str)):
                add(child.args[0].value, child.lineno, local)
            visit(child, local)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def import_graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, int, bool]]]]:
    modules = project_modules()
    return modules, {m: imports(p, modules) for m, p in modules.items()}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (or a module
    importing itself), as a sorted list."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(out)


def layer_violations(modules, edges) -> dict[str, list[str]]:
    """Every broken rule, by rule name, as "module:line -> imported" lines."""
    out: dict[str, list[str]] = {"cycles": [], "schemas": [], "pipelines->jobs": [], "cli": [],
                                 "backend->backend": [], "local imports": []}
    # a circle closed by a function-local import is still a circle (only dodged)
    out["cycles"] = [" -> ".join(c) for c in find_cycles({m: {t for t, _, _ in e} for m, e in edges.items()})]
    for m, found in sorted(edges.items()):
        for target, line, local in found:
            where = f"{m}:{line} -> {target}"
            if _in(m, "schemas") and not _in(target, "schemas"):
                out["schemas"].append(where)
            if _in(m, "pipelines") and _in(target, "jobs"):
                out["pipelines->jobs"].append(where)
            if _in(target, "jobs.cli") and not _in(m, "jobs.cli"):
                out["cli"].append(where)
            if m in WAREHOUSE_BACKENDS and target in WAREHOUSE_BACKENDS and target != m:
                out["backend->backend"].append(where)
            if local:
                out["local imports"].append(where)
    return out


@pytest.mark.parametrize("rule", ["cycles", "schemas", "pipelines->jobs", "cli", "backend->backend",
                                  "local imports"])
def test_layering_rule_holds(rule):
    modules, edges = import_graph()
    broken = layer_violations(modules, edges)[rule]
    assert not broken, f"{rule}: {len(broken)} violation(s):\n  " + "\n  ".join(broken)


# --- the checker itself, on small synthetic graphs and sources ----------------
def test_cycle_finder_sees_a_circle_and_not_a_chain():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_function_local_and_importlib_imports_are_seen(tmp_path, monkeypatch):
    pkg = tmp_path / "jobs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import importlib\n\ndef f():\n    from jobs import b\n"
                              "    importlib.import_module('jobs.cli')\n")
    (pkg / "b.py").write_text("from jobs import a\n")
    (pkg / "cli.py").write_text("")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    modules = {module_name(p): p for p in sorted(pkg.rglob("*.py"))}
    edges = {m: imports(p, modules) for m, p in modules.items()}
    broken = layer_violations(modules, edges)
    assert broken["local imports"] == ["jobs.a:4 -> jobs.b", "jobs.a:5 -> jobs.cli"]
    assert broken["cli"] == ["jobs.a:5 -> jobs.cli"]
    assert broken["cycles"] == ["jobs.a -> jobs.b"]  # closed by the hidden import
