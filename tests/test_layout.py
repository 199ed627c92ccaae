"""Dependency direction: layers import downwards only, paddle only inside segx/backend, and no
function grows past ~60 lines without saying why."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "segx"

# Lower layers never import higher ones (docs/architecture.md). A module's layer is the first
# rule that matches its dotted name.
LAYERS: list[tuple[int, str, tuple[str, ...]]] = [
    (0, "foundation", ("segx.utils.constants", "segx.utils.errors", "segx.utils.fileio", "segx.config",
                       "segx.utils.safe_pickle", "segx.utils.class_lists")),
    (1, "registry", ("segx.zoo.registry",)),
    (2, "library", ("segx.",)),  # everything not named below
    (3, "modes", ("segx.modules",)),
    (4, "applications", ("segx.pipelines", "segx.apps.serving.app", "segx.modules.table", "segx.apps.cli",
                         "segx.apps.weights_cli", "segx.apps.demo", "segx.apps.docgen", "segx.__main__",
                         "segx")),
]


def layer_of(module: str) -> tuple[int, str]:
    best = None
    for rank, name, prefixes in LAYERS:
        for p in prefixes:
            if module == p or module.startswith(p if p.endswith(".") else p + "."):
                if best is None or len(p) > len(best[2]):
                    best = (rank, name, p)
    return best[0], best[1]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def segx_imports(path: Path, modules: set[str]) -> list[tuple[int, str]]:
    """(line, module) of every segx module a file imports, at any depth (lazy ones too):
    ``from segx import x`` imports ``segx.x`` when that is a module, else ``segx``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "segx":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "segx"]
    return found


def upward_imports(root: Path | None = None) -> list[str]:
    root = root or PACKAGE
    modules = {module_name(p, root.parent) for p in root.rglob("*.py")}
    bad = []
    for path in sorted(root.rglob("*.py")):
        rank, name = layer_of(module_name(path, root.parent))
        for line, target in sorted(set(segx_imports(path, modules))):
            t_rank, t_name = layer_of(target)
            if t_rank > rank:
                bad.append(f"{path.relative_to(root.parent)}:{line} ({name}) imports {target} "
                           f"({t_name})")
    return bad


def test_layers_import_downwards_only():
    assert upward_imports() == []


def test_an_upward_import_fails_the_check(tmp_path):
    fake = tmp_path / "segx"
    (fake / "modules").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "modules" / "__init__.py").write_text("")
    (fake / "modules" / "train.py").write_text("")
    (fake / "runs.py").write_text("def f():\n    from segx.modules.train import run\n")
    assert upward_imports(fake) == [
        "segx/runs/folder.py:2 (library) imports segx.modules.train (modes)"]


def argv_or_exit(root: Path | None = None) -> list[str]:
    """Modules below the applications that read ``sys.argv`` or end the process with
    ``sys.exit`` (the library raises SegxError; only the command line exits)."""
    root = root or PACKAGE
    bad = []
    for path in sorted(root.rglob("*.py")):
        if layer_of(module_name(path, root.parent))[1] == "applications":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "sys" and node.attr in ("argv", "exit"):
                bad.append(f"{path.relative_to(root.parent)}:{node.lineno} sys.{node.attr}")
    return bad


def test_the_library_reads_no_argv_and_never_exits(tmp_path):
    assert argv_or_exit() == []
    fake = tmp_path / "segx"
    (fake / "training").mkdir(parents=True)
    (fake / "cli.py").write_text("import sys\nsys.exit(main(sys.argv))\n")
    (fake / "training" / "rank.py").write_text("import sys\nsys.exit(run(sys.argv[1]))\n")
    assert argv_or_exit(fake) == ["segx/training/rank.py:2 sys.exit",
                                  "segx/training/rank.py:2 sys.argv"]


def test_only_the_backend_imports_paddle():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "backend" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(n.split(".")[0] in ("paddle", "paddleseg") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize("limit", [60])
def test_functions_are_short_or_say_why(limit):
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if size > limit and "Long because" not in doc:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({size})")
    assert long == []
