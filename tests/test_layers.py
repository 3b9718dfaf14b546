"""The package's structure: its layers, lowest first, and no import that runs against them.

Imports are read from the source (every ``import``, at module level or inside a function:
a lazy import that closes a circle, or reaches up a layer, is still one), so these tests
need no JAX."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "urn_jax"

# Each module's layer: the shared leaves, then the folders, lowest first (as
# urn_jax/__init__.py and each folder's __init__ say). A module may import its own layer's
# and lower layers' modules only; model and data share a layer and never import each other.
LAYERS = {
    "urn_jax.errors": 0, "urn_jax.files": 0, "urn_jax.console": 0, "urn_jax.modalities": 0,
    "urn_jax.labels": 0, "urn_jax.metrics": 0, "urn_jax.job_config": 0,
    "urn_jax.scenarios": 0, "urn_jax.hosts": 0, "urn_jax.lesion_metrics": 0,
    "urn_jax.model": 1, "urn_jax.data": 1,
    "urn_jax.training": 2,
    "urn_jax.inference": 3,
    "urn_jax.evaluation": 4,
    "urn_jax.experiments": 5, "urn_jax": 5,  # the public face: its lazy names reach far
    "urn_jax.jobs": 6,
}
SIBLINGS = ("urn_jax.model", "urn_jax.data")


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


def home(module: str) -> str:
  """The entry of ``LAYERS`` that ``module`` belongs to: itself, or its folder."""
  parts = module.split(".")
  for n in range(len(parts), 0, -1):
    if ".".join(parts[:n]) in LAYERS:
      return ".".join(parts[:n])
  raise KeyError(f"{module} is in no layer: add it to LAYERS")


def violations(graph: dict[str, set[str]]) -> list[str]:
  """Every import of a higher layer, or between model and data."""
  found = []
  for module, edges in sorted(graph.items()):
    for target in sorted(edges):
      mine, theirs = home(module), home(target)
      if mine == theirs:
        continue
      if LAYERS[theirs] > LAYERS[mine] or (LAYERS[theirs] == LAYERS[mine]
                                           and {mine, theirs} <= set(SIBLINGS)):
        found.append(f"{module} imports {target}")
  return found


def test_the_cycle_finder_finds_a_circle_through_a_lazy_import():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert cycles(graph) == [["a", "b", "c", "a"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
  graph = import_graph()
  assert "urn_jax.training.loop" in graph and "urn_jax.data.preprocess" in graph
  assert cycles(graph) == []


def test_every_module_has_a_layer_and_imports_none_above_it():
  graph = import_graph()
  assert {home(m) for m in graph} == set(LAYERS)  # every layer holds a module
  assert violations(graph) == []


def test_the_layer_check_catches_an_upward_import_and_model_data_imports():
  """The check itself, on the real graph with one import added: a training module
  reaching up into evaluation, a leaf into the model, the model into the data."""
  graph = import_graph()
  for module, target in (("urn_jax.training.losses", "urn_jax.evaluation.report"),
                         ("urn_jax.labels", "urn_jax.model.urn"),
                         ("urn_jax.model.unet", "urn_jax.data.cases"),
                         ("urn_jax.data.loader", "urn_jax.model.fusion")):
    wrong = {**graph, module: graph[module] | {target}}
    assert violations(wrong) == [f"{module} imports {target}"]


def test_the_training_loop_is_a_leaf_that_only_the_job_runners_import():
  """As in the flax examples: nothing below the loop (prediction, evaluation, the data
  path) reaches up into it."""
  graph = import_graph()
  importers = sorted(m for m, edges in graph.items() if "urn_jax.training.loop" in edges)
  assert importers == ["urn_jax.experiments.study"]


def test_no_module_is_longer_than_400_lines_nor_a_function_than_80():
  long_modules = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
                  if (n := len(p.read_text().splitlines())) > 400}
  long_functions = []
  for path in PACKAGE.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > 80:
          long_functions.append(f"{path.relative_to(PACKAGE)}:{node.name} ({length})")
  assert long_modules == {} and long_functions == []
