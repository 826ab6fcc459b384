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
