"""The code's structure, checked by parsing it: methods are asked, never named; imports flow one
way without circles; modules stay small."""

import ast
import pathlib

import pytest

from anp.methods import METHODS

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("anp", "models", "attacks")
MAX_LINES = 300


def _modules(root=ROOT):
  """{dotted module name: path} of every module of PACKAGES under `root`."""
  modules = {}
  for package in PACKAGES:
    for path in (root / package).rglob("*.py"):
      parts = list(path.relative_to(root).with_suffix("").parts)
      if parts[-1] == "__init__":
        parts = parts[:-1]
      modules[".".join(parts)] = path
  return modules


def _mentions_method(node):
  return "method" in ast.unparse(node)


def _method_literals(node):
  """The method names a string constant or a tuple / list / set of them holds."""
  if isinstance(node, ast.Constant) and node.value in METHODS:
    return [node.value]
  if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
    return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in METHODS]
  return []


def method_name_comparisons(path):
  """(line, source) of every place in `path` where a method's name is compared with something
  holding a method (`cfg.method == "hydra"`, `method in ("bp", "anp")`, or a dict keyed by
  method names looked up with `.get(cfg.method)`)."""
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Compare):
      operands = [node.left, *node.comparators]
      if (any(_method_literals(o) for o in operands)
          and any(_mentions_method(o) for o in operands if not _method_literals(o))):
        found.append((node.lineno, ast.unparse(node)))
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "get" and isinstance(node.func.value, ast.Dict)
          and any(_method_literals(k) for k in node.func.value.keys if k is not None)
          and any(_mentions_method(a) for a in node.args)):
      found.append((node.lineno, ast.unparse(node)))
  return found


def test_no_method_name_is_compared_outside_the_methods_package():
  paths = [p for m, p in _modules().items() if not m.startswith("anp.methods")]
  paths += [ROOT / "flags.py", ROOT / "main.py"]
  found = [f"{p.relative_to(ROOT)}:{line}: {src}" for p in paths
           for line, src in method_name_comparisons(p)]
  assert not found, "a method's name is compared; ask its anp.methods object:\n" + "\n".join(
      found)


def test_the_method_literal_check_finds_comparisons(tmp_path):
  path = tmp_path / "code.py"
  path.write_text('if cfg.method == "hydra":\n  pass\n'
                  'masked = method in ("bp", "anp", "anp_vs")\n'
                  'term = {"trades": "trades"}.get(self.method, "mixed")\n'
                  'ok = cfg.hydra_objective == "at" and x in ("hydra", 1)\n')
  assert [line for line, _ in method_name_comparisons(path)] == [1, 3, 4]


def import_graph(root=ROOT):
  """{module: the modules of PACKAGES it imports}, function-level imports included (a late
  import hides a circle from Python, not from readers)."""
  modules = _modules(root)
  graph = {}
  for name, path in modules.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        # `from pkg import submodule` depends on the submodule, not on the package's __init__.
        subs = [f"{node.module}.{alias.name}" for alias in node.names]
        targets = [s for s in subs if s in modules] or [node.module]
      else:
        continue
      deps.update(t for t in targets if t in modules and t != name)
    graph[name] = deps
  return graph


def cycles(graph):
  """The strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while not component or component[-1] != v:
        component.append(stack.pop())
        on_stack.discard(component[-1])
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_imports_have_no_circle_and_networks_and_attacks_never_import_anp():
  graph = import_graph()
  assert cycles(graph) == []
  upward = [(m, d) for m, deps in graph.items() for d in deps
            if m.split(".")[0] in ("models", "attacks") and d.split(".")[0] == "anp"]
  assert upward == []
  # The networks need no attack.
  assert [(m, d) for m, deps in graph.items() for d in deps
          if m.startswith("models") and d.startswith("attacks")] == []


def test_the_import_check_finds_a_late_import_circle(tmp_path):
  for package in PACKAGES:
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
  (tmp_path / "anp" / "a.py").write_text("from anp.b import f\n")
  (tmp_path / "anp" / "b.py").write_text("def f():\n  from anp import a\n")
  (tmp_path / "models" / "net.py").write_text("import anp.a\n")
  graph = import_graph(tmp_path)
  assert cycles(graph) == [["anp.a", "anp.b"]]
  assert graph["models.net"] == {"anp.a"}


@pytest.mark.parametrize("module", sorted(_modules()))
def test_modules_stay_small(module):
  lines = len(_modules()[module].read_text().splitlines())
  assert lines <= MAX_LINES, f"{module}: {lines} lines; split it by job"
