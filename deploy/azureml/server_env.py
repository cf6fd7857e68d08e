"""A virtualenv with Azure ML's own inference server (``azmlinfsrv``) for serving
``deploy/azureml/score.py`` on this machine exactly as a managed online endpoint runs it.

The server pins its own pydantic, opentelemetry and Flask versions, which clash with the
project's lock; so, as in an Azure ML environment, it gets a virtualenv of its own:

1. ``python -m venv VENV`` with the interpreter running this script (the project's);
2. ``pip install azureml-inference-server-http==PIN`` there first, so its dependencies resolve
   alone (and pip never sees, let alone uninstalls, the project's packages);
3. only then a ``.pth`` file in its site-packages that appends the project's site-packages (and
   through its editable install, ``src/``) after its own: torch, scikit-learn and prodclass come
   from the project, pydantic, opentelemetry and Flask from the server's own.

Run again, it installs only what is missing. Usage: ``python deploy/azureml/server_env.py
VENV`` (``make`` target ``$(VENV)/azureml-server/bin/azmlinfsrv``; the tests call it too)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

PACKAGE = "azureml-inference-server-http"
PIN = "1.5.1"
PTH = "zz-prodclass-project.pth"  # after every .pth of the server's own packages


def site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


def installed_version(venv: Path) -> str | None:
    """The server package's version in ``venv`` (its own site-packages only), or None."""
    for dist in site_packages(venv).glob("azureml_inference_server_http-*.dist-info"):
        return dist.name.removesuffix(".dist-info").split("-", 1)[1]
    return None


def ensure(venv: Path) -> Path:
    """The ``azmlinfsrv`` command of ``venv``, creating and completing the virtualenv first."""
    venv = venv.absolute()
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pth = site_packages(venv) / PTH
    if installed_version(venv) != PIN:
        pth.unlink(missing_ok=True)  # pip must see the server's packages only
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"{PACKAGE}=={PIN}"],
            check=True,
        )  # fmt: skip
    # the site-packages of the interpreter running this script (the project's), symlinks resolved
    project = str(Path(sysconfig.get_paths()["purelib"]).resolve())
    line = f"import site; site.addsitedir({project!r})\n"
    if not pth.is_file() or pth.read_text() != line:
        pth.write_text(line)
    return venv / "bin" / "azmlinfsrv"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} VENV")
    sys.stdout.write(f"{ensure(Path(sys.argv[1]))}\n")
