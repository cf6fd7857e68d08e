"""ARCHITECTURE.md is true to the code: it names every module of src/prodclass (and only
modules that exist), and its table of which part imports which is the one the code has."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from tests.docs.markdown import ROOT, Doc

PACKAGE = ROOT / "src/prodclass"
DOC = Doc(ROOT / "ARCHITECTURE.md")


def modules() -> list[str]:
    """Every module, relative to src/prodclass; a migration folder's revisions count as one."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if path.name == "__init__.py" and len(rel.parts) > 1:
            continue
        if "versions" in rel.parts[:-1]:
            found.add(str(rel.parent) + "/")
        else:
            found.add(str(rel))
    return sorted(found)


def named_modules() -> dict[str, int]:
    """Paths in the first column of ARCHITECTURE.md's tables of modules -> their line."""
    first, last = DOC.section("The parts (`src/prodclass/`)")
    named = {}
    for table in DOC.tables():
        if not first <= table.start <= last:
            continue
        for line, cells in table.rows:
            for span in re.findall(r"`([^`]+)`", cells[0]):
                named[span] = line
    return named


def test_architecture_names_every_module_and_only_modules_that_exist():
    named = named_modules()
    missing = [m for m in modules() if m not in named]
    gone = [f"ARCHITECTURE.md:{line}: {m}" for m, line in named.items() if m not in modules()]
    assert not missing, f"ARCHITECTURE.md, The parts: modules not described: {missing}"
    assert not gone, "modules ARCHITECTURE.md describes that do not exist:\n" + "\n".join(gone)


# ---- import directions ----------------------------------------------------------------------
def part_of_file(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] + "/" if len(rel.parts) > 1 else rel.parts[0]


def part_of_module(module: str) -> str:
    name = module.split(".")[1]
    return name + "/" if (PACKAGE / name).is_dir() else name + ".py"


def imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        return [
            n if n != "prodclass" else "prodclass.__init__"
            for n in names
            if n.split(".")[0] == "prodclass"
        ]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "prodclass":  # from prodclass import x: a module, or __init__'s name
            names = [f"prodclass.{a.name}" for a in node.names]
            return [
                n
                if (PACKAGE / n.split(".")[1]).is_dir()
                or (PACKAGE / f"{n.split('.')[1]}.py").exists()
                else "prodclass.__init__"
                for n in names
            ]
        if node.module.startswith("prodclass."):
            return [node.module]
    return []


def imports_of(node: ast.AST, nested: bool = False):  # type: ignore[no-untyped-def]
    """(module, inside a function?) for every prodclass import under ``node``; imports under
    ``if TYPE_CHECKING`` never run and are left out."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        deeper = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
        for module in imported(child):
            yield module, deeper
        yield from imports_of(child, deeper)


@cache
def import_graph() -> dict[str, tuple[set[str], set[str]]]:
    """part -> (parts it imports when it is loaded, parts it imports only inside functions)."""
    graph: dict[str, tuple[set[str], set[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        me = part_of_file(path)
        at_load, inside = graph.setdefault(me, (set(), set()))
        for module, nested in imports_of(ast.parse(path.read_text())):
            if (part := part_of_module(module)) != me:
                (inside if nested else at_load).add(part)
    return {part: (load, inside - load) for part, (load, inside) in graph.items()}


def documented_graph() -> dict[str, tuple[int, set[str], set[str]]]:
    (table,) = DOC.tables_in("Import directions")

    def parts(cell: str) -> set[str]:
        return set(re.findall(r"`([^`]+)`", cell))

    documented = {}
    for line, cells in table.rows:
        (part,) = parts(cells[0])
        documented[part] = (line, parts(cells[1]), parts(cells[2]))
    return documented


def test_the_import_table_is_the_one_the_code_has():
    code = import_graph()
    documented = documented_graph()
    problems = [
        f"ARCHITECTURE.md (Import directions): no row for {p}"
        for p in code.keys() - documented.keys()
    ]
    for part, (line, load, inside) in sorted(documented.items()):
        if part not in code:
            problems.append(f"ARCHITECTURE.md:{line}: {part} is no part of src/prodclass")
            continue
        real_load, real_inside = code[part]
        if load != real_load:
            problems.append(
                f"ARCHITECTURE.md:{line}: {part} imports at load time {sorted(real_load)}, "
                f"the doc says {sorted(load)}"
            )
        if inside != real_inside:
            problems.append(
                f"ARCHITECTURE.md:{line}: {part} imports inside functions {sorted(real_inside)}, "
                f"the doc says {sorted(inside)}"
            )
    assert not problems, "\n".join(problems)


def test_the_import_graph_sees_imports_at_load_time_and_inside_functions():
    graph = import_graph()
    assert "settings.py" in graph["serving/"][0]  # from prodclass.settings import Settings
    assert "ui/" in graph["cli/"][1]  # `prodclass ui` imports the web app only when run
    assert "settings.py" not in graph["photo_store.py"][0]  # under TYPE_CHECKING only


def load_time_imports(node: ast.AST):  # type: ignore[no-untyped-def]
    """The import statements under ``node`` that run when its module is loaded."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from load_time_imports(child)


def module_graph() -> dict[str, set[str]]:
    """module -> the prodclass modules it imports at load time (``from a import b`` counts
    as importing the module ``a.b`` when there is one)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        targets = graph.setdefault(name, set())
        for node in load_time_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names} & names.keys()
            elif node.level == 0 and node.module in names:
                targets.add(node.module)
                targets |= {f"{node.module}.{a.name}" for a in node.names} & names.keys()
        targets.discard(name)
    return graph


def test_no_module_imports_itself_back_at_load_time():
    """What ARCHITECTURE.md says of the parts that import each other: no module cycle."""
    graph = module_graph()
    assert "prodclass.training.train" in graph["prodclass.registry.promotion"]
    done: set[str] = set()

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        for target in sorted(graph[module]):
            if target in path:
                return [*path[path.index(target) :], target]
            if target not in done and (found := cycle_from(target, [*path, target])):
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = cycle_from(module, [module])
        assert cycle is None, "an import cycle at load time: " + " -> ".join(cycle or [])
