"""The folders of segx are its layers: each imports only the folders its row names, the intent
rules hold on their own, paddle only inside segx/backend, and no function grows past ~60 lines
without saying why."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "segx"

# The folders of segx are its layers (docs/architecture.md): one row per folder, naming the
# folders its modules may import besides their own. Every module belongs to a folder; a module
# at the top of segx/ other than the two entry files belongs to none and fails the check.
BASE = ("utils", "config", "imaging")
LAYERS: dict[str, tuple[str, ...]] = {
    "utils": (),
    "config": ("utils",),
    "imaging": ("utils", "config"),
    "backend": BASE,
    "data": BASE,
    "runs": (*BASE, "backend"),
    "inference": (*BASE, "backend", "data", "runs"),
    "export": (*BASE, "backend", "data", "inference", "runs"),
    "zoo": (*BASE, "backend", "data", "inference", "runs", "export"),
    "training": (*BASE, "backend", "data", "inference", "runs", "export", "zoo"),
    "api": (*BASE, "backend", "data", "inference", "runs", "export", "zoo"),
    "pipelines": (*BASE, "backend", "data", "inference", "runs", "export", "zoo", "api"),
    "modules": (*BASE, "backend", "data", "inference", "runs", "export", "zoo", "training",
                "api", "pipelines"),
    "apps": (*BASE, "backend", "data", "inference", "runs", "export", "zoo", "training", "api",
             "pipelines", "modules"),
}
ENTRY_FILES = {"segx": "apps", "segx.__main__": "apps"}  # segx/__init__.py, segx/__main__.py

# The intent behind the rows, checked on their own so that a row edited to allow one of these
# still fails: the inference and data paths and the backend know nothing of training, export or
# the zoo; pixels (imaging) know nothing of paddle.
NEVER: dict[str, tuple[str, ...]] = {
    "inference": ("training", "export", "zoo"),
    "data": ("training", "export", "zoo"),
    "backend": ("training", "export", "zoo"),
    "imaging": ("backend",),
}


def folder_of(module: str) -> str | None:
    """The layer folder of a dotted module name, or None when it belongs to none."""
    if module in ENTRY_FILES:
        return ENTRY_FILES[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


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


def _imports(root: Path):
    """(file, its folder, line, imported module, that module's folder) for every segx import."""
    modules = {module_name(p, root.parent) for p in root.rglob("*.py")}
    for path in sorted(root.rglob("*.py")):
        folder = folder_of(module_name(path, root.parent))
        for line, target in sorted(set(segx_imports(path, modules))):
            yield path.relative_to(root.parent), folder, line, target, folder_of(target)


def homeless_modules(root: Path | None = None) -> list[str]:
    root = root or PACKAGE
    return sorted(str(p.relative_to(root.parent)) for p in root.rglob("*.py")
                  if folder_of(module_name(p, root.parent)) is None)


def upward_imports(root: Path | None = None) -> list[str]:
    """Imports a folder's row does not allow."""
    return [f"{path}:{line} ({folder}) imports {target} ({t_folder})"
            for path, folder, line, target, t_folder in _imports(root or PACKAGE)
            if folder and t_folder and t_folder != folder and t_folder not in LAYERS[folder]]


def intent_violations(root: Path | None = None) -> list[str]:
    return [f"{path}:{line} ({folder}) imports {target} ({t_folder})"
            for path, folder, line, target, t_folder in _imports(root or PACKAGE)
            if t_folder in NEVER.get(folder, ())]


def test_every_module_belongs_to_a_layer_folder(tmp_path):
    assert homeless_modules() == []
    fake = _fake_tree(tmp_path, {"segx/helpers.py": "", "segx/zoo/registry.py": ""})
    assert homeless_modules(fake) == ["segx/helpers.py"]


def test_the_rows_name_only_folders_below_and_every_folder_has_one():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(LAYERS)
    order = list(LAYERS)
    for folder, allowed in LAYERS.items():
        assert all(order.index(a) < order.index(folder) for a in allowed), folder


def test_layers_import_downwards_only():
    assert upward_imports() == []


def _fake_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"segx/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(tmp_path).parents:
            if str(parent) != ".":
                (tmp_path / parent / "__init__.py").touch()
        path.write_text(text)
    return tmp_path / "segx"


def test_an_upward_import_fails_the_check(tmp_path):
    fake = _fake_tree(tmp_path, {
        "segx/modules/train.py": "",
        "segx/runs/folder.py": "def f():\n    from segx.modules.train import run\n",
        "segx/utils/errors.py": "from segx import config\n",
        "segx/config/__init__.py": ""})
    assert upward_imports(fake) == [
        "segx/runs/folder.py:2 (runs) imports segx.modules.train (modules)",
        "segx/utils/errors.py:1 (utils) imports segx.config (config)"]


def test_the_intent_rules_hold_and_the_rows_agree_with_them():
    assert intent_violations() == []
    for folder, never in NEVER.items():
        assert not set(never) & set(LAYERS[folder]), folder


@pytest.mark.parametrize("folder,forbidden",
                         [(f, n) for f, nevers in NEVER.items() for n in nevers])
def test_a_planted_intent_violation_fails_the_check(tmp_path, folder, forbidden):
    fake = _fake_tree(tmp_path, {
        f"segx/{folder}/planted.py": f"import os\n\n\ndef f():\n    from segx.{forbidden} "
                                     f"import thing\n",
        f"segx/{forbidden}/__init__.py": ""})
    expected = [f"segx/{folder}/planted.py:5 ({folder}) imports segx.{forbidden} ({forbidden})"]
    assert intent_violations(fake) == expected
    assert upward_imports(fake) == expected


def argv_or_exit(root: Path | None = None) -> list[str]:
    """Modules below the applications that read ``sys.argv`` or end the process with
    ``sys.exit`` (the library raises SegxError; only the command line exits)."""
    root = root or PACKAGE
    bad = []
    for path in sorted(root.rglob("*.py")):
        if folder_of(module_name(path, root.parent)) == "apps":
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
    (fake / "apps").mkdir()
    (fake / "apps" / "cli.py").write_text("import sys\nsys.exit(main(sys.argv))\n")
    (fake / "training" / "rank.py").write_text("import sys\nsys.exit(run(sys.argv[1]))\n")
    assert argv_or_exit(fake) == ["segx/training/rank.py:2 sys.exit",
                                  "segx/training/rank.py:2 sys.argv"]


def test_only_the_backend_imports_paddle_paddleseg_or_paddle2onnx():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "backend" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(n.split(".")[0] in ("paddle", "paddleseg", "paddle2onnx") for n in names):
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
