"""What the docs name exists: routes, commands and options, settings, Make targets, files,
tests, links; and the lists the docs keep (routes, commands, families, stages, services, pages)
are complete. A doc that names something gone, or misses something new, fails here with the
doc, the line and the name."""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
from functools import cache
from pathlib import Path

import typer
import yaml

from prodclass.settings import Settings
from tests.docs.markdown import ROOT, Doc, all_docs, relative

DOCS = all_docs()
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ROUTE = re.compile(rf"^((?:{'|'.join(METHODS)})(?:/(?:{'|'.join(METHODS)}))*) (/[^\s?`]*)")


def report(problems: list[str]) -> str:
    return "\n".join(["the docs name what the code does not have:", *problems])


# ---- routes ---------------------------------------------------------------------------------
@cache
def app():  # type: ignore[no-untyped-def]
    """The FastAPI app, built and not started (no model, no database)."""
    from prodclass.serving.api.app import create_app

    return create_app(Settings(_env_file=None))


@cache
def openapi_operations() -> frozenset[tuple[str, str]]:
    """(method, path) of every operation of the app's OpenAPI document."""
    document = app().openapi()
    return frozenset((m.upper(), path) for path, ops in document["paths"].items() for m in ops)


@cache
def app_operations() -> dict[str, set[str]]:
    """path -> methods: the operations, the docs pages (/docs, /redoc, /openapi.json) and
    mounted folders (/docs/assets: GET)."""
    served: dict[str, set[str]] = {}
    for method, path in openapi_operations():
        served.setdefault(path, set()).add(method)
    for route in app().routes:
        if path := getattr(route, "path", None):
            served.setdefault(path, set()).update(getattr(route, "methods", None) or {"GET"})
    return served


def named_routes(text: str) -> list[tuple[str, str]]:
    """(method, path) pairs of a code span such as `GET /models/{version}/evidence` or
    `GET/PATCH/DELETE /users/{username}`."""
    match = ROUTE.match(text)
    if not match:
        return []
    return [(method, match.group(2)) for method in match.group(1).split("/")]


def test_the_route_table_lists_every_operation_of_the_app():
    doc = Doc(ROOT / "docs/api.md")
    (table,) = doc.tables_in("Routes")
    listed: dict[tuple[str, str], int] = {}
    for line, cells in table.rows:
        spans = re.findall(r"`([^`]+)`", cells[0])
        assert spans, f"{doc.name}:{line}: a route row names no `METHOD /path`"
        for span in spans:
            pairs = named_routes(span)
            assert pairs, f"{doc.name}:{line}: {span!r} is not `METHOD /path`"
            listed |= {pair: line for pair in pairs}
    operations = openapi_operations()
    missing = sorted(operations - listed.keys())
    gone = sorted(pair for pair in listed.keys() - operations)
    problems = [f"docs/api.md (Routes): {m} {p} is served but not listed" for m, p in missing]
    problems += [f"{doc.name}:{listed[pair]}: {pair[0]} {pair[1]} is not served" for pair in gone]
    assert not problems, "\n".join(problems)


def least_roles() -> dict[tuple[str, str], str]:
    """The least role of every operation, from tests/serving/test_security.py (which checks
    it against the app): "anyone" for the public ones."""
    tree = ast.parse((ROOT / "tests/serving/test_security.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "LEAST_ROLE":
            return {
                ast.literal_eval(key): value.value if isinstance(value, ast.Constant) else "anyone"
                for key, value in zip(node.value.keys, node.value.values)  # type: ignore[attr-defined]
            }
    raise AssertionError("tests/serving/test_security.py has no LEAST_ROLE table")


def test_the_route_table_gives_each_operation_its_least_role():
    doc = Doc(ROOT / "docs/api.md")
    (table,) = doc.tables_in("Routes")
    roles = least_roles()
    problems = []
    for line, cells in table.rows:
        who = re.match(r"`?(anyone|client|reviewer|admin)\b", cells[1])
        for span in re.findall(r"`([^`]+)`", cells[0]):
            for pair in named_routes(span):
                expected = roles.get(pair)
                if who is None or who.group(1) != expected:
                    problems.append(f"{doc.name}:{line}: {pair[0]} {pair[1]} is for {expected}")
    assert not problems, "\n".join(problems)


def test_every_route_the_docs_name_is_served():
    served = app_operations()
    problems = []
    for doc in DOCS:
        for line, text in doc.code():
            for method, path in named_routes(text):
                if method not in served.get(path, set()):
                    problems.append(f"{doc.name}:{line}: {method} {path}")
    assert not problems, report(problems)


# ---- the command line -----------------------------------------------------------------------
@cache
def cli() -> object:
    from prodclass.cli.main import app

    return typer.main.get_command(app)


def subcommands(command: object) -> dict[str, object]:
    return dict(getattr(command, "commands", {}))


def options(command: object) -> dict[str, object]:
    found = {"--help": None}
    for param in command.params:  # type: ignore[attr-defined]
        if param.param_type_name == "option":
            for name in [*param.opts, *param.secondary_opts]:
                found[name] = param
    return found


SHELL_STOP = ("|", "||", "&&", ";", "#", ">", "2>", "<", "\\", "&")


def command_problems(text: str, inline: bool) -> list[str]:
    """What is wrong with each `prodclass ...` command line in ``text``. In a code span (a
    table's synopsis) ``\\|`` separates alternatives: a sibling command or another value."""
    tokens = text.replace("\\|", " | ").split() if inline else text.split()
    problems = []
    for start, token in enumerate(tokens):
        if token.strip("'\"") != "prodclass" and not token.endswith("bin/prodclass"):
            continue
        if start and tokens[start - 1].startswith("-"):
            continue  # a value: `az ml ... -n prodclass`
        path, node, parents = ["prodclass"], cli(), []
        rest = tokens[start + 1 :]
        i = 0
        while i < len(rest):
            word = rest[i].strip("[](),.;'\"")
            raw = rest[i]
            i += 1
            if not inline and (raw in SHELL_STOP or raw.startswith(("#", "$(", "`"))):
                break
            if inline and raw == "|":
                if i < len(rest) and parents:
                    sibling = rest[i].strip("[](),")
                    if sibling in subcommands(parents[-1]):
                        node = subcommands(parents[-1])[sibling]
                        path[-1] = sibling
                        i += 1
                continue
            if not word or word in ("…", "...") or word.startswith("<"):
                continue
            if word.startswith("-"):
                name = word.split("=")[0]
                known = options(node)
                if name not in known:
                    problems.append(f"`{' '.join(path)}` has no option {name}")
                    continue
                param = known[name]
                takes_value = param is not None and not (param.is_flag or param.count)
                if takes_value and "=" not in word:
                    i += 1  # its value
                continue
            children = subcommands(node)
            if children:
                if word in children:
                    parents.append(node)
                    node = children[word]
                    path.append(word)
                else:
                    problems.append(f"`{' '.join(path)}` has no command {word!r}")
                    break
            # a leaf command: arguments and values are not checked
    return problems


def test_every_command_and_option_the_docs_name_exists():
    problems = []
    for doc in DOCS:
        fenced = {n for n, _ in doc.code_block_lines()}
        for line, text in doc.code():
            for problem in command_problems(text, inline=line not in fenced):
                problems.append(f"{doc.name}:{line}: {problem}")
    assert not problems, report(problems)


def leaf_commands(command: object, path: tuple[str, ...] = ("prodclass",)) -> list[str]:
    children = subcommands(command)
    if not children:
        return [" ".join(path)]
    return [leaf for name, sub in children.items() for leaf in leaf_commands(sub, (*path, name))]


def test_the_command_reference_lists_every_command():
    doc = Doc(ROOT / "docs/cli.md")
    listed = []
    for table in doc.tables():
        for _, cells in table.rows:
            listed += re.findall(r"`([^`]+)`", cells[0])
    missing = [
        leaf
        for leaf in leaf_commands(cli())
        if not any(re.match(rf"{re.escape(leaf)}(\s|$)", span) for span in listed)
    ]
    assert not missing, f"{doc.name}: commands missing from its tables: {missing}"


# ---- settings -------------------------------------------------------------------------------
SETTING = re.compile(r"PRODCLASS_([A-Z0-9_]*[A-Z0-9*])(?![A-Za-z0-9_])(:PORT)?")
SHORTHAND = re.compile(r"^_([A-Z][A-Z0-9_]*)$")  # `_AUDIENCE` after `PRODCLASS_JWT_ISSUER`
# Environment variables with the prefix that are not settings, and the code that reads them.
NOT_SETTINGS = {
    "TEST_POSTGRES_URL": "tests",  # the tests' PostgreSQL server
    "TEST_REDIS_URL": "tests",  # the tests' Redis server
    "REQUIRE_POSTGRES": "tests",  # fail, not skip, without PostgreSQL (CI)
    "REQUIRE_REDIS": "tests",
    "MODEL_VERSION": "deploy/azureml",  # set by `prodclass deploy azureml` for score.py
}


@cache
def setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def unknown_setting(name: str, port: bool) -> str | None:
    names = setting_names() | NOT_SETTINGS.keys()
    if "*" in name:
        return None if fnmatch.filter(names, name) else name
    if name not in names:
        return name
    if port and name.endswith("_HOST") and name[: -len("HOST")] + "PORT" not in names:
        return name[: -len("HOST")] + "PORT"
    return None


def shorthand_problem(suffix: str, previous: str | None) -> str | None:
    """`_AUDIENCE` stands for the setting that shares a prefix with the last one named."""
    if previous is None:
        return f"_{suffix} (no PRODCLASS_ setting named before it)"
    segments = previous.split("_")
    for keep in range(len(segments) - 1, -1, -1):
        if "_".join([*segments[:keep], suffix]) in setting_names():
            return None
    return f"_{suffix} (after PRODCLASS_{previous})"


def test_every_setting_the_docs_name_is_a_setting():
    problems = []
    for doc in [*DOCS, Doc(ROOT / ".env.example")]:
        previous = None
        spans: dict[int, list[str]] = {}
        for number, span in doc.code():
            spans.setdefault(number, []).append(span)
        for number, text in enumerate(doc.lines, 1):
            for match in SETTING.finditer(text):
                if missing := unknown_setting(match.group(1), bool(match.group(2))):
                    problems.append(f"{doc.name}:{number}: PRODCLASS_{missing}")
                elif "*" not in match.group(1):
                    previous = match.group(1)
            for span in spans.get(number, []):
                m = SHORTHAND.match(span)
                if m and (problem := shorthand_problem(m.group(1), previous)):
                    problems.append(f"{doc.name}:{number}: {problem}")
    assert not problems, report(problems)


def test_the_variables_that_are_not_settings_are_read_where_they_say():
    for name, where in NOT_SETTINGS.items():
        files = [ROOT / where] if (ROOT / where).is_file() else (ROOT / where).rglob("*.py")
        files = [*files, ROOT / ".github/workflows/ci.yml"]
        assert any(f"PRODCLASS_{name}" in f.read_text() for f in files), (
            f"PRODCLASS_{name} is read nowhere under {where}: drop it from NOT_SETTINGS"
        )


# ---- Make targets ---------------------------------------------------------------------------
@cache
def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*[:?]?=\s*(.*?)\s*$", text, re.M))

    def expand(value: str) -> str:
        for _ in range(5):
            value = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), ""), value)
        return value

    targets = set()
    for line in text.splitlines():
        if m := re.match(r"^([^\s#:=][^:=]*?)\s*::?(?!=)", line):
            targets |= {expand(t) for t in m.group(1).split()}
    return targets


def test_every_make_target_the_docs_name_exists():
    problems = []
    for doc in DOCS:
        for line, text in doc.code():
            tokens = text.split()
            for i, token in enumerate(tokens):
                if token != "make":
                    continue
                for target in tokens[i + 1 :]:
                    if target.startswith(("-", "#", "&", "|", ";")) or "=" in target:
                        break
                    target = target.strip("`'\",;)")
                    if target and target not in make_targets():
                        problems.append(f"{doc.name}:{line}: make {target}")
    assert not problems, report(problems)


# ---- files, tests and links -----------------------------------------------------------------
FILE_ROOTS = ("src/", "tests/", "bench/", "deploy/", "docs/", ".github/", ".ci/")
BARE_MODULE = re.compile(r"^[a-z_][a-z0-9_]*\.py$")  # a module named without its folder


@cache
def file_names() -> set[str]:
    """The name of every file of the project (tracked, or new and not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {Path(name).name for name in listed}


@cache
def defined_tests() -> dict[str, set[str]]:
    """test file name -> the test functions it defines, for every file under tests/."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        found.setdefault(path.name, set()).update(names)
        found.setdefault(relative(path), set()).update(names)
    return found


def file_problem(span: str) -> str | None:
    span = span.split()[0].rstrip(".,;:")
    if any(mark in span for mark in "<{*…$"):
        return None
    if "::" in span:
        file, *names = span.split("::")
        known = defined_tests()
        if file and file not in known:
            return f"{file} (no such test file)"
        defined = known[file] if file else set().union(*known.values())
        for name in names:
            name = name.split("[")[0]
            if name and name not in defined:
                return f"{span} (no test {name})"
        return None
    if re.fullmatch(r"test_\w+\.py", span):
        return None if span in defined_tests() else f"{span} (no such test file)"
    if re.fullmatch(r"test_[a-z0-9_]+", span):
        defined = set().union(*defined_tests().values())
        return None if span in defined else f"{span} (no such test)"
    if span.startswith(FILE_ROOTS):
        return None if (ROOT / span).exists() else f"{span} (no such file)"
    if BARE_MODULE.match(span):
        return None if span in file_names() else f"{span} (no such file)"
    return None


def test_every_file_and_test_the_docs_name_exists():
    problems = []
    for doc in DOCS:
        fenced = {n for n, _ in doc.code_block_lines()}
        for line, text in doc.code():
            if line in fenced:
                continue  # commands, not references
            if problem := file_problem(text):
                problems.append(f"{doc.name}:{line}: {problem}")
    assert not problems, report(problems)


def test_every_link_between_docs_resolves():
    problems = []
    for doc in DOCS:
        for line, target in doc.links():
            if re.match(r"^[a-z]+:", target):
                continue  # another site
            file, _, anchor = target.partition("#")
            path = (doc.path.parent / file).resolve() if file else doc.path
            if not path.exists():
                problems.append(f"{doc.name}:{line}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in Doc(path).anchors():
                problems.append(f"{doc.name}:{line}: {target} (no such heading)")
    assert not problems, report(problems)


# ---- the lists the docs keep are complete ---------------------------------------------------
def first_column(table) -> list[str]:  # type: ignore[no-untyped-def]
    return [span for _, cells in table.rows for span in re.findall(r"`([^`]+)`", cells[0])]


def test_the_family_table_lists_every_model_family():
    from prodclass.models.registry import FAMILIES

    doc = Doc(ROOT / "docs/models.md")
    listed = first_column(doc.tables()[0])
    assert sorted(listed) == sorted(FAMILIES), (
        f"{doc.name}:{doc.tables()[0].start}: families {sorted(listed)}, code {sorted(FAMILIES)}"
    )


def test_the_stage_table_lists_every_dvc_stage_in_order():
    doc = Doc(ROOT / "docs/data-versioning.md")
    (table,) = doc.tables_in("The stages")
    from prodclass.pipelines.definitions import PIPELINE_FILES  # dvc.yaml, models/dvc.yaml

    stages = [
        stage
        for name in PIPELINE_FILES
        for stage in yaml.safe_load((ROOT / name).read_text())["stages"]
    ]
    assert first_column(table) == stages, (
        f"{doc.name}:{table.start}: stages of {' and '.join(PIPELINE_FILES)} {stages}"
    )


def test_the_deployment_guide_names_every_compose_service():
    doc = Doc(ROOT / "docs/deployment.md")
    first, last = doc.section("2. docker-compose (one Docker host)")
    named = {text for line, text in doc.code() if first <= line <= last}
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    missing = sorted(set(services) - named)
    assert not missing, f"{doc.name}:{first}: compose services not described: {missing}"


def ui_pages() -> dict[str, str]:
    """Page title -> the least role that sees it, read from the web app's source."""
    tree = ast.parse((ROOT / "src/prodclass/ui/app.py").read_text())
    by_role, titles = {}, {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id == "PAGES_BY_ROLE":
                by_role = ast.literal_eval(node.value)
            elif node.targets[0].id == "PAGES":
                for key, call in zip(node.value.keys, node.value.values):  # type: ignore[attr-defined]
                    title = next(k.value for k in call.keywords if k.arg == "title")
                    titles[ast.literal_eval(key)] = title.value
    order = ("client", "reviewer", "admin")
    return {
        title: next(role for role in order if page in by_role[role])
        for page, title in titles.items()
    }


def test_the_web_app_guide_lists_every_page_with_who_sees_it():
    doc = Doc(ROOT / "docs/web-app.md")
    (table,) = doc.tables_in("Pages")
    listed = {cells[0].strip("*"): (line, cells[1].strip("`")) for line, cells in table.rows}
    pages = ui_pages()
    assert sorted(listed) == sorted(pages), f"{doc.name}:{table.start}: pages {sorted(pages)}"
    wrong = [
        f"{doc.name}:{line}: {title} is for {pages[title]}, not {who}"
        for title, (line, who) in listed.items()
        if who != pages[title]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checks_above_find_what_is_missing(tmp_path: Path):
    """The checks fail on a doc naming what does not exist (so they cannot pass on nothing)."""
    assert command_problems("prodclass data frobnicate --out X", inline=True)
    assert command_problems("prodclass train --no-such-option", inline=True)
    assert not command_problems("prodclass models list \\| promote VERSION \\| rollback", True)
    assert not command_problems("echo x | prodclass users create a --role admin", False)
    assert unknown_setting("NO_SUCH_SETTING", False) == "NO_SUCH_SETTING"
    assert unknown_setting("API_HOST", True) is None
    assert shorthand_problem("AUDIENCE", "JWT_ISSUER") is None
    assert shorthand_problem("NOWHERE", "JWT_ISSUER")
    assert "no-such-target" not in make_targets() and "test" in make_targets()
    assert file_problem("tests/serving/test_api.py::test_no_such_test")
    assert file_problem("bench/no_such_bench.py")
    assert not file_problem("tests/serving/test_security.py")
    assert named_routes("GET/PATCH /users/{username}") == [
        ("GET", "/users/{username}"),
        ("PATCH", "/users/{username}"),
    ]
    sample = tmp_path / "x.md"
    sample.write_text("# T\n\nSee `prodclass nowhere`.\n\n| a | b |\n|---|---|\n| `x` | 1 |\n")
    doc = Doc(sample)
    assert doc.code() == [(3, "prodclass nowhere"), (7, "x")]
    assert doc.tables()[0].rows == [(7, ["`x`", "1"])]
