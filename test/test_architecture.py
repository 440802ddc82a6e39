"""The package's layering: no module of ``pose_ros`` imports, directly or through others, a module
that imports it back (at module level or inside a function), and the types shared by the layers
load without PyTorch."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "pose_ros"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its file (``if TYPE_CHECKING``
    blocks included: a cycle there is still a cycle of the design)."""
    files = {_module_name(path, package.parent): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:  # `from pkg import name`: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycle_inside_the_package() -> None:
    graph = import_graph()
    assert "pose_ros.pipeline" in graph and "pose_ros.factory" in graph["pose_ros.ros.node"] | {
        dep for deps in graph.values() for dep in deps
    }
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    package = tmp_path / "pose_ros"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pose_ros import b\n")
    (package / "b.py").write_text("def f():\n    from pose_ros.c import g\n")
    (package / "c.py").write_text("from . import a\n")
    assert import_cycles(import_graph(package)) == [["pose_ros.a", "pose_ros.b", "pose_ros.c"]]
    (package / "c.py").write_text("import os\n")  # the cycle broken
    assert import_cycles(import_graph(package)) == []


def test_shared_types_and_ros_messages_load_without_torch() -> None:
    """The types every layer shares, and the ROS message conversion that only needs them, import
    in a fresh interpreter without loading PyTorch."""
    code = (
        "import sys\n"
        "import pose_ros.types, pose_ros.tracking, pose_ros.smoothing, pose_ros.depth\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert result.stdout.strip() == "False", result.stdout + result.stderr


@pytest.mark.parametrize(
    "module",
    sorted(
        f"{path.parent.name}.{path.stem}"
        for folder in ("bench", "devtools")
        for path in (REPO_ROOT / folder).glob("*.py")
        if path.stem != "__init__"
    ),
)
def test_benchmark_and_tool_modules_import(module: str) -> None:
    """`make bench`, `make demo` and `make docs` run these modules: a stale import in any of them
    fails here, not at the end of a long benchmark."""
    importlib.import_module(module)
