"""The layout: the project's modules import each other one way only, read from their source (no
module is run), counting imports inside functions too."""

import ast

from conftest import ROOT

MODULES = sorted(p.stem for p in ROOT.glob("*.py"))


def imports(module: str) -> set[str]:
    """The project modules that ``module`` imports anywhere in its code."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != module}
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_no_import_cycle():
    graph = {m: imports(m) for m in MODULES}
    assert {"main", "experiments", "Convnet", "data", "results", "files"} <= set(graph)
    cycles = [m for m in MODULES if m in reachable(graph, m)]
    assert not cycles, {m: sorted(graph[m]) for m in cycles}


def test_lower_modules_import_nothing_above_them():
    graph = {m: imports(m) for m in MODULES}
    # The network draws nothing and runs no experiment; the data and file layers know no model.
    assert not reachable(graph, "Convnet") & {"utils", "experiments", "results", "main"}
    assert not reachable(graph, "data") & {"Convnet", "download", "utils", "results"}
    assert reachable(graph, "files") == set()
    assert reachable(graph, "config") == set()  # the configuration knows no other module
    # No module but the command line imports it.
    assert not [m for m in MODULES if "main" in graph[m]]
    # The attempt loop runs the training it is given: restarts.py imports no TensorFlow, and
    # the run folder, the pooling and the comparison train nothing.
    for module in ("restarts", "rundir", "pooling", "compare", "attribution"):
        assert not reachable(graph, module) & {"Convnet", "experiments", "main"}, module


def test_no_module_over_700_lines():
    """One concern per module: none of the project's top-level modules grows past 700 lines."""
    sizes = {m: len((ROOT / f"{m}.py").read_text().splitlines()) for m in MODULES}
    assert {m: n for m, n in sizes.items() if n > 700} == {}


def test_no_tensorflow_at_import_where_promised():
    """The command lines answer -h at once: these modules import TensorFlow and Keras only
    inside functions."""
    for module in (
        "main",
        "engine",
        "experiments",
        "restarts",
        "rundir",
        "config",
        "explain",
        "compare",
    ):
        tree = ast.parse((ROOT / f"{module}.py").read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"tensorflow", "keras", "Convnet"}, module
