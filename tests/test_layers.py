"""The package's structure: no import circle, and the training loop is a leaf.

Imports are read from the source (every ``import``, at module level or inside a function:
a lazy import that closes a circle is still a circle), so these tests need no JAX."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "urn_jax"


def _module_name(path: Path, package: Path) -> str:
  parts = path.relative_to(package.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
  """``{module: modules of the package it imports}``; ``from urn_jax import x`` counts as
  importing ``urn_jax.x`` when that is a module, else the package itself."""
  modules = {_module_name(p, package): p for p in package.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        edges |= {a.name for a in node.names if a.name in modules}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module not in modules:
          continue
        for alias in node.names:
          sub = f"{node.module}.{alias.name}"
          edges.add(sub if sub in modules else node.module)
    graph[name] = edges - {name}
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Every import circle found by a depth-first search (each reported once per entry)."""
  found, state = [], {}

  def visit(node, path):
    state[node] = "open"
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        found.append(path[path.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, path + [nxt])
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  return found


def test_the_cycle_finder_finds_a_circle_through_a_lazy_import():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert cycles(graph) == [["a", "b", "c", "a"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
  graph = import_graph()
  assert "urn_jax.train" in graph and "urn_jax.data.preprocess" in graph
  assert cycles(graph) == []


def test_the_training_loop_is_a_leaf_that_only_the_job_runners_import():
  """As in the flax examples: nothing below the loop (prediction, evaluation, the data
  path) reaches up into it."""
  graph = import_graph()
  importers = sorted(m for m, edges in graph.items() if "urn_jax.train" in edges)
  assert importers == ["urn_jax.study"]
