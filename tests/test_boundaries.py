"""The project's boundaries, checked on the source and in fresh processes:
- the chat side (bots/, the CLI's non-GPU commands) never loads torch or diffusers;
- torch and diffusers are imported only by the GPU side, engine/worker/ (and the one-time ONNX export of the
  moderation model, which needs torch to trace it);
- engine/ never imports discord, slack or bots; moderation/ never imports bots;
- no import cycles between the project's modules."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bots", "engine", "moderation", "config", "storage")
GPU_LIBRARIES = ("torch", "diffusers")
MAY_IMPORT_GPU_LIBRARIES = ("engine.worker", "moderation.onnx_export")


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path, module: str) -> Iterator[str]:
    """Every module `path` imports, at the top or inside functions, except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, path.name == "__init__.py")
            for alias in node.names:  # `from package import module` imports that module; otherwise the base
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULE_NAMES else base


def _walk_runtime(node: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        yield child
        yield from _walk_runtime(child)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _top(name: str) -> str:
    return name.split(".")[0]


MODULES = project_modules()
MODULE_NAMES = frozenset(MODULES)
IMPORTS = {module: set(imports_of(path, module)) for module, path in MODULES.items()}


def test_only_the_worker_imports_torch_or_diffusers() -> None:
    offenders = {
        module: sorted(name for name in imported if _top(name) in GPU_LIBRARIES)
        for module, imported in IMPORTS.items()
        if not module.startswith(MAY_IMPORT_GPU_LIBRARIES)
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_the_engine_never_imports_chat_code_and_moderation_never_imports_bots() -> None:
    chat = ("discord", "slack_bolt", "slack_sdk", "bots")
    offenders = {
        module: sorted(
            name
            for name in imported
            if _top(name) in chat or (module.startswith("moderation") and _top(name) == "bots")
        )
        for module, imported in IMPORTS.items()
        if module.startswith(("engine", "moderation"))
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_no_import_cycles() -> None:
    graph = {
        module: {name for name in imported if name in MODULES and name != module}
        for module, imported in IMPORTS.items()
    }
    cycles = [component for component in _strongly_connected(graph) if len(component) > 1]
    assert cycles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively (the graph is small, but recursion limits are not worth testing)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _loaded_after(code: str, env: dict[str, str] | None = None, libraries: tuple[str, ...] = GPU_LIBRARIES) -> set[str]:
    """Which of `libraries` (the GPU ones by default) a fresh interpreter has loaded after running `code`."""
    check = f"{code}\nimport sys\nprint('LOADED:', *sorted(n for n in {libraries!r} if n in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", check],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    return set(result.stdout.splitlines()[-1].split()[1:])


def test_every_chat_module_loads_without_torch() -> None:
    chat_modules = sorted(module for module in MODULES if module.startswith("bots"))
    code = "\n".join(f"import {module}" for module in chat_modules)
    assert _loaded_after(code) == set()


def test_the_chat_side_loads_redis_only_for_scale_out() -> None:
    """Embedded, `imagine serve` never loads redis-py: importing it alone raised the Slack acks' p99 from ~100 to
    ~150 ms in bench/load.py (2026-12-02, alternating commits, two runs each; why was not found). Scale-out code
    imports it where it is used (engine/redis_streams.py, moderation/limits_redis.py)."""
    chat_modules = sorted(module for module in MODULES if module.startswith("bots"))
    code = "\n".join(f"import {module}" for module in chat_modules)
    assert _loaded_after(code, libraries=("redis",)) == set()


@pytest.mark.parametrize("argv", [["review", "list"], ["verify", "missing.jpg"], ["review", "audit"]])
def test_non_gpu_commands_load_no_torch(tmp_path: Path, argv: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IMAGINE_STORE__URL": f"sqlite:///{tmp_path}/imagine.db"}
    code = f"from bots.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _loaded_after(code, env) == set()


def test_moderate_on_onnx_runtime_loads_no_torch(tmp_path: Path) -> None:
    """The first call on a machine exports the model (that needs torch, once); every later one must not."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IMAGINE_ENGINE__CACHE_DIR": str(tmp_path / "cache")}
    code = "from bots.cli import main\nmain(['moderate', 'a lighthouse at dawn'])"
    _loaded_after(code, env)
    assert _loaded_after(code, env) == set()
