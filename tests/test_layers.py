"""The house: data flows down the layers, and the API carries none of the worker stack.

- The store imports nothing above it; no two packages import each other, directly or round a cycle. Counted
  are the imports a module makes when it is loaded (not those under ``if TYPE_CHECKING:`` or inside a
  function, which are how a composition root builds what it wires).
- Importing the API loads neither the batcher, the runtimes, the workers nor NVML.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "batchery"
#: Modules every layer may use: definitions, not behaviour.
BASE = {"keys", "errors", "defaults", "settings", "tiers", "redis_urls", "__init__", "__main__"}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "batchery" or len(parts) < 2:
        return None
    return None if parts[1] in BASE else parts[1]


def module_level_imports(path: Path) -> set[str]:
    """What the module imports when it is loaded: top-level statements, outside ``if TYPE_CHECKING:``."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(inner, ast.Import):
                found |= {alias.name for alias in inner.names}
            elif isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
                found |= {inner.module} | {f"{inner.module}.{alias.name}" for alias in inner.names}
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = "batchery." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        source = layer_of(module)
        if source is None:
            continue
        for imported in module_level_imports(path):
            target = layer_of(imported)
            if target is not None and target != source and (PACKAGE / target).is_dir():
                graph[source].add(target)
    return graph


def test_the_store_imports_nothing_above_it():
    assert package_graph()["store"] == set()


def test_no_two_packages_import_each_other_even_round_a_cycle():
    graph = package_graph()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                cycles.append(path + [nxt])
            elif nxt not in path:
                visit(nxt, path + [nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, cycles[:5]


def test_the_api_loads_no_worker_code():
    probe = (
        "import json, sys; import batchery.app; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('batchery.', 'pynvml', 'torch', 'onnxruntime')))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    heavy = [m for m in loaded if m.split(".")[0] in ("pynvml", "torch", "onnxruntime")]
    worker_side = [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in ("batching", "runtimes", "workers", "recovery", "faults")]
    assert heavy == [] and worker_side == [], heavy + worker_side
