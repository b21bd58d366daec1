"""The house rules of docs/ARCHITECTURE.md, checked on the source: no import circles, no private names
across modules, no executor branches outside pipeline/executors, relative imports, one spec per stage."""

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "pipeline"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _imports(mods: dict[str, Path]):
    """(module, imported project module, imported name) for every import, in functions too."""
    for mod, p in mods.items():
        here = mod.split(".") if p.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                full = ".".join(base + ([node.module] if node.module else []))
                for a in node.names:
                    sub = f"{full}.{a.name}"
                    yield mod, sub if sub in mods else full, a.name, node
            elif isinstance(node, ast.Import):
                for a in node.names:
                    yield mod, a.name, None, node


def test_no_import_circles():
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, target, _, _ in _imports(mods):
        package_edge = mods[mod].name == "__init__.py" and target.startswith(mod + ".") or \
            target in mods and mods[target].name == "__init__.py" and mod.startswith(target + ".")
        if target in mods and target != mod and not package_edge:
            graph[mod].add(target)
    seen: dict[str, int] = {}  # 1 on the current path, 2 done
    circles = []

    def visit(m, path):
        seen[m] = 1
        for t in sorted(graph[m]):
            if seen.get(t) == 1:
                circles.append(path[path.index(t):] + [t])
            elif t not in seen:
                visit(t, path + [t])
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m, [m])
    assert circles == []


def test_no_private_name_crosses_a_module():
    mods = _modules()
    crossing = [f"{m} imports {n} from {t}" for m, t, n, _ in _imports(mods)
                if n and n.startswith("_") and not n.startswith("__") and t in mods and t != m]
    assert crossing == []


def test_imports_inside_the_package_are_relative():
    absolute = [f"{m}: {ast.unparse(node)}" for m, t, _, node in _imports(_modules())
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("pipeline")]
    assert absolute == []


def test_only_the_executors_know_which_executor_runs():
    branch = re.compile(r"""executor(\.name)?\s*[!=]=\s*["']""")
    found = [f"{p.relative_to(PKG)}:{i}: {line.strip()}"
             for p in PKG.rglob("*.py") if "executors" not in p.relative_to(PKG).parts
             for i, line in enumerate(p.read_text().splitlines(), 1) if branch.search(line)]
    assert found == []


def test_every_stage_package_exports_one_spec_and_the_plan_lists_them():
    from pipeline.plan import default_plan
    from pipeline.stage import StageSpec
    plan = default_plan()
    stages = sorted(p.name for p in (PKG / "stages").iterdir() if (p / "cli.py").exists())
    assert all(isinstance(s, StageSpec) for s in plan)
    assert sorted(s.name for s in plan) == stages
