"""What Streamlit Community Cloud needs to run the web app from a clone: the requirements file
next to the main file (pinned like requirements.lock) covers everything the app imports, the
app needs no model stack (no torch), and it finds the prodclass package without installing it."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from tests.conftest import PROJECT_ROOT

UI = PROJECT_ROOT / "src/prodclass/ui"
MODEL_STACK = ("torch", "sklearn", "mlflow", "transformers", "spacy", "fastapi", "sqlalchemy")

# Runs the app's main file as Streamlit Cloud does (a script; bare mode here) in this
# interpreter made to look like a fresh environment: distributions outside the allowed set
# cannot be imported, and the editable install's src/ folder is off sys.path. Then imports every
# module of the UI package, and reports what got imported.
PROBE = """
import importlib, json, pkgutil, runpy, sys
from importlib import metadata

src, app, allowed = sys.argv[1], sys.argv[2], set(json.loads(sys.argv[3]))
owners = metadata.packages_distributions()

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        dists = {d.lower().replace("_", "-") for d in owners.get(name, [])}
        if "." not in name and name != "prodclass" and dists and not dists & allowed:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
sys.path[:] = [p for p in sys.path if p.rstrip("/") != src]
before = set(sys.modules)
runpy.run_path(app, run_name="__main__")
import prodclass.ui
for module in pkgutil.walk_packages(prodclass.ui.__path__, "prodclass.ui."):
    importlib.import_module(module.name)
print(json.dumps({
    "prodclass_file": prodclass.__file__,
    "modules": sorted({name.split(".")[0] for name in set(sys.modules) - before}),
}))
"""


def _pins(path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and line[0] != "#"]
    return {canonicalize_name(r.name): str(r.specifier) for r in requirements}


def _closure(names) -> set[str]:
    """The distributions ``names`` install, following their (non-extra) requirements."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _probe(allowed: set[str]) -> subprocess.CompletedProcess:
    arguments = [str(PROJECT_ROOT / "src"), str(UI / "app.py"), json.dumps(sorted(allowed))]
    return subprocess.run(
        [sys.executable, "-c", PROBE, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )


def test_the_ui_requirements_are_pinned_like_the_lock():
    ui = _pins(UI / "requirements.txt")
    lock = _pins(PROJECT_ROOT / "requirements.lock")
    assert "streamlit" in ui
    assert "torch" not in ui
    for name, pin in ui.items():
        assert pin.startswith("=="), f"{name} is not pinned"
        assert lock.get(name) == pin, f"{name}{pin} differs from requirements.lock"


def test_the_app_runs_from_a_clone_with_only_its_requirements():
    done = _probe(_closure(_pins(UI / "requirements.txt")))
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["prodclass_file"].startswith(str(PROJECT_ROOT / "src"))
    assert "streamlit" in probe["modules"]
    assert not set(MODEL_STACK) & set(probe["modules"]), "the web app pulled the model stack"


def test_the_probe_fails_when_a_requirement_is_missing():
    """Without httpx (which the API client needs) the same probe cannot run the app."""
    done = _probe(_closure(_pins(UI / "requirements.txt")) - {"httpx"})
    assert done.returncode != 0
    assert "No module named 'httpx'" in done.stderr
