"""The shape of the tree: no import cycle (lazy imports included), no sys.path
edits in scripts, no environment writes when a library module is imported, no
source file past 600 lines, no `# noqa` in the packages (the linter's
configuration holds the exceptions)."""

from __future__ import annotations

import ast
import pathlib

from conftest import ROOT

PACKAGES = ("tfhub_models", "serving", "benchmarks")
MAX_LINES = 600


def module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict:
  """{dotted name: path} of every module of the packages."""
  return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(path: pathlib.Path, name: str, modules: dict) -> set:
  """The package modules `path` imports, anywhere in the file (functions included).

  `from a.b import c` is an import of a.b.c when that is a module, else of a.b;
  a package's own parents, which Python initialises on the way, do not count.
  """
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                 for alias in node.names]
    else:
      continue
    found |= {t for t in targets if t in modules and t != name}
  return found


def find_cycle(graph: dict) -> list:
  """One import cycle of `graph` (module -> modules it imports), or []."""
  state = {}   # module -> "open" while on the path, "done" after

  def visit(node, path):
    state[node] = "open"
    for target in sorted(graph[node]):
      if state.get(target) == "open":
        return path[path.index(target):] + [target]
      if target not in state:
        cycle = visit(target, path + [target])
        if cycle:
          return cycle
    state[node] = "done"
    return []

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node, [node])
      if cycle:
        return cycle
  return []


def test_the_cycle_finder_finds_cycles():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycles_in_the_packages():
  modules = library_modules()
  assert "tfhub_models.models.xlm_roberta" in modules and "serving.server" in modules
  graph = {name: imports_of(path, name, modules) for name, path in modules.items()}
  assert graph["tfhub_models.models.xlm_roberta"] >= {"tfhub_models.layers",
                                                      "tfhub_models.checkpoints.loader"}
  cycle = find_cycle(graph)
  assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_scripts_import_the_installed_package():
  for path in (ROOT / "scripts").glob("*.py"):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
      if isinstance(node, ast.Attribute) and node.attr in ("insert", "append") and (
          isinstance(node.value, ast.Attribute) and node.value.attr == "path"
          and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys"):
        raise AssertionError(f"{path.relative_to(ROOT)} edits sys.path")


def test_library_modules_change_no_process_state_on_import():
  """Module-level code (not inside functions) sets no environment variable."""
  for name, path in library_modules().items():
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for statement in tree.body:
      if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        continue
      if isinstance(statement, ast.If) and "__main__" in ast.unparse(statement.test):
        continue
      text = ast.unparse(statement)
      assert "os.environ" not in text and "putenv" not in text, f"{name}: {text[:80]}"


def test_no_source_file_does_several_files_work():
  """A file past MAX_LINES is doing several jobs: split it into a package."""
  long = {str(path.relative_to(ROOT)): lines
          for folder in (*PACKAGES, "scripts") for path in (ROOT / folder).rglob("*.py")
          if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
  assert not long, f"over {MAX_LINES} lines: {long}"


def test_no_noqa_in_the_packages():
  marked = [f"{path.relative_to(ROOT)}:{number}"
            for package in ("tfhub_models", "serving")
            for path in (ROOT / package).rglob("*.py")
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if "# noqa" in line]
  assert not marked, f"# noqa markers (use [tool.ruff.lint.per-file-ignores]): {marked}"
