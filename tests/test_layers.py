"""The house's layout holds: every part imports one way, with no circle, and the shop never reaches the intake.

Parts: `engine/` (the round logic's pieces), `catalog/` (reading a shop's datasets, its products and pictures),
`common/` (what every part shares), `intake/` (a shop's products and photos on their way in), `shop/` (the web
page), and the commands at the top (app.py, upload_ds.py, embed.py, recommender.py, evaluate.py, insights.py,
demo.py). Every import counts, also one inside a function or under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PARTS = ("engine", "catalog", "common", "intake", "shop")
COMMANDS = ("app", "upload_ds", "embed", "recommender", "evaluate", "insights", "demo")
# what each part may import of the project (itself always); the commands may import any part
MAY_IMPORT = {
    "common": set(),
    "engine": {"common"},
    "catalog": {"common", "embed"},  # embed: a CLIP-family catalog's text tower for typed words
    "intake": {"common", "embed"},
    "shop": {"common", "catalog", "engine", "recommender"},
    "recommender": {"common", "engine"},
    "embed": {"common"},
}


def project_modules() -> dict[str, Path]:
    """Every module of the project by its dotted name (tests, bench and docs aside)."""
    out = {name: ROOT / f"{name}.py" for name in COMMANDS}
    for part in PARTS:
        for path in sorted((ROOT / part).glob("*.py")):
            if path.stem != "__init__":
                out[f"{part}.{path.stem}"] = path
    return out


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        found |= {n for n in names if n in modules}
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def part(module: str) -> str:
    return module.split(".")[0]


def test_every_file_of_the_project_is_in_a_part_or_a_command():
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top == set(COMMANDS), f"files at the top that are not commands: {sorted(top - set(COMMANDS))}"
    assert all((ROOT / p / "__init__.py").exists() for p in PARTS)


def test_no_import_circle():
    g = graph()
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in g:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_each_part_imports_only_what_it_may():
    wrong = []
    for module, deps in graph().items():
        mine = part(module)
        if mine in COMMANDS and mine not in MAY_IMPORT:
            continue  # the other commands put the parts together
        allowed = MAY_IMPORT[mine] | {mine}
        wrong += [f"{module} -> {d}" for d in sorted(deps) if part(d) not in allowed]
    assert not wrong, wrong


def test_the_shop_side_imports_nothing_of_the_intake():
    g = graph()
    shop_side = {"app", *(m for m in g if part(m) in ("shop", "catalog", "engine"))}
    seen, todo = set(), list(shop_side)
    while todo:  # everything the shop side reaches, directly or not
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += g[m]
    assert not {m for m in seen if part(m) in ("intake", "upload_ds")}, sorted(seen)


def test_logic_never_imports_the_ui():
    for module, path in project_modules().items():
        if part(module) in ("shop", "app"):
            continue
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {n for n in names if n.split(".")[0] in ("gradio", "starlette", "fastapi")}, module


def test_no_function_over_60_lines():
    """Readable top to bottom: a function's body (its signature and docstring aside) fits 60 lines; argument
    declarations (`parse_args`) aside."""
    long = []
    for module, path in project_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "parse_args":
                body = node.body[1:] if ast.get_docstring(node) else node.body
                if body and body[-1].end_lineno - body[0].lineno + 1 > 60:
                    long.append(f"{module}.{node.name}: {body[-1].end_lineno - body[0].lineno + 1} lines")
    assert not long, long
