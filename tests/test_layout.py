"""The package's shape: no import cycle inside data_utils (function-level imports included, since
an import moved into a function to dodge a cycle is still a cycle), no module named after a
notebook, and every public helper's docstring names the notebook that teaches it."""
import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "data_utils"
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")


def imports_of(module: str) -> set[str]:
    """The data_utils modules that ``module`` imports anywhere in its file."""
    tree = ast.parse((PKG / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x
                out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("data_utils."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("data_utils."))
    return (out & set(MODULES)) - {module}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_data_utils():
    graph = {m: imports_of(m) for m in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_is_named_after_a_notebook():
    for m in MODULES:
        assert not re.match(r"(nb|notebook)?_?\d\d", m), m
        text = (PKG / f"{m}.py").read_text()
        assert "behind notebook" not in text and "Notebook 04's TFF training" not in text, m


def test_the_readme_layout_lists_every_module_in_dependency_order():
    """README's layout section lists each module once, and no module imports one listed after it
    (the dependency direction is visible: read it top to bottom)."""
    readme = (PKG.parent / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"`data_utils/(\w+)\.py`", section)
    assert sorted(listed) == MODULES, set(listed) ^ set(MODULES)
    position = {m: i for i, m in enumerate(listed)}
    for m in MODULES:
        later = sorted(d for d in imports_of(m) if position[d] > position[m])
        assert not later, f"{m} imports {later}, listed after it in README's layout"


def public_functions(module: str):
    tree = ast.parse((PKG / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node


@pytest.mark.parametrize("module", MODULES)
def test_every_module_names_the_notebooks_that_teach_it(module):
    doc = ast.get_docstring(ast.parse((PKG / f"{module}.py").read_text())) or ""
    assert doc, f"{module} has no docstring"
    assert re.search(r"[Nn]otebooks? \d\d|make |CI|side environment|every notebook", doc), \
        f"data_utils/{module}.py's docstring does not say which notebook (or tool) uses it"


@pytest.mark.parametrize("module", MODULES)
def test_every_public_helper_has_a_docstring(module):
    missing = [n.name for n in public_functions(module) if not ast.get_docstring(n)]
    assert not missing, f"{module}: no docstring on {missing}"


@pytest.mark.parametrize("module", MODULES)
def test_the_docstring_examples_run(module):
    """Every example in a module's docstrings is run and gives what it shows."""
    import doctest
    import importlib

    mod = importlib.import_module(f"data_utils.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {module} failed"
