"""Shared fixtures: the real sample, corrupted copies of it, isolated settings and state."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pandas as pd
import pytest

from prodclass.data.layout import (
    X_TEST,
    X_TRAIN,
    Y_TRAIN,
    ChallengeLayout,
    read_features,
    read_labels,
)
from prodclass.data.prepare import SplitParams, prepare
from prodclass.data.validate import validate
from prodclass.settings import get_settings

# real-server fixtures (PostgreSQL database per module, free ports) for every test folder
pytest_plugins = ["tests.servers"]

# Every process the tests start inherits this mark; at the end of the session any process
# still carrying it was left running by a test (see pytest_sessionfinish).
# pytest-xdist workers (children of the process that made the mark) keep their controller's
# mark, so the check runs once, in the controller; any other pytest (one a test starts) makes
# a mark of its own.
SESSION_MARK = "TEST_SESSION_MARK"
SESSION_OWNER = "TEST_SESSION_OWNER"
if os.environ.get(SESSION_OWNER) != str(os.getppid()) or SESSION_MARK not in os.environ:
    os.environ[SESSION_MARK] = f"prodclass-tests-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.environ[SESSION_OWNER] = str(os.getpid())

# Two workers share two cores: each worker, and every server or pipeline it starts, computes on
# one thread (more would only make the two fight over the cores).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_threads] = "1"
    # a worker is handed COLUMNS=80 and LINES=24, which rich would fix as the width of the
    # CLI's console at import; without them it reads the width each test gives
    for _size in ("COLUMNS", "LINES"):
        os.environ.pop(_size, None)


def _parent(pid: str) -> int:
    """The parent pid of ``pid`` (/proc/PID/stat's fourth field; the name may hold spaces)."""
    return int((Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()[1])


def _processes_left_running(skip_children: bool = False) -> dict[int, str]:
    """Processes other than this one whose environment carries this session's mark; with
    ``skip_children``, not this process's own children (the pytest-xdist workers, which end
    on their own once the run is over)."""
    mark = f"{SESSION_MARK}={os.environ[SESSION_MARK]}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with suppress(OSError, ValueError, IndexError):
            if skip_children and _parent(entry.name) == os.getpid():
                continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found[int(entry.name)] = command.strip() or "(no command line)"
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


# The longest test files, longest first (pytest's --durations, summed per file). pytest-xdist
# hands whole files (and the files of the `served` registry as one unit) to the two workers in
# collection order (make test: -n 2 --no-loadscope-reorder), so the long ones start at once
# and the short ones fill in at the end; a file missing here runs after these, in its usual
# order. See tests/README.md.
SLOWEST_FILES = (
    # the files over the `served` registry, one unit of work (the longest): it starts first
    "tests/serving/test_fuzz_api.py",
    "tests/serving/test_ui_apptest.py",
    "tests/serving/test_faults.py",
    "tests/serving/test_server.py",
    "tests/serving/test_security.py",
    # then the other files, longest first
    "tests/integration/test_retraining_loop.py",
    "tests/model/test_multimodal_effnet.py",
    "tests/serving/test_retraining.py",
    "tests/integration/test_dagster_definitions.py",
    "tests/model/test_text_families.py",
    "tests/serving/test_two_replicas.py",
    "tests/model/test_late_fusion.py",
    "tests/integration/test_dvc_pipeline.py",
    "tests/model/test_clip_style.py",
    "tests/integration/test_mlflow_server_postgres.py",
    "tests/code/test_setup.py",
    "tests/integration/test_dagster_ui.py",
    "tests/model/test_multimodal_clip.py",
    "tests/integration/test_tune.py",
)


# The files over the `served` registry (tests/serving/conftest.py): one unit of work, so one
# worker trains it once. Collection fails when a file using `served` is missing here.
SERVED_FILES = frozenset(
    {
        "tests/serving/test_ab_testing.py",
        "tests/serving/test_api.py",
        "tests/serving/test_azureml_score.py",
        "tests/serving/test_deploy_azureml.py",
        "tests/serving/test_drift.py",
        "tests/serving/test_faults.py",
        "tests/serving/test_fuzz_api.py",
        "tests/serving/test_prediction_log_postgres.py",
        "tests/serving/test_prediction_queue.py",
        "tests/serving/test_prometheus.py",
        "tests/serving/test_recovery.py",
        "tests/serving/test_remote_predictor.py",
        "tests/serving/test_security.py",
        "tests/serving/test_server.py",
        "tests/serving/test_shared_photos.py",
        "tests/serving/test_similarity.py",
        "tests/serving/test_text_search.py",
        "tests/serving/test_tls_and_secrets.py",
        "tests/serving/test_ui_apptest.py",
        "tests/serving/test_ui_browser.py",
    }
)


def _file(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (a stable sort: each file keeps its own order); a test that uses a
    PostgreSQL or Redis server is marked so (``-m "not postgres"``, ``-m "not redis"``)."""
    rank = {path: i for i, path in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(_file(item), len(rank)))
    uses = {_file(item) for item in items if "served" in getattr(item, "fixturenames", ())}
    if missing := uses - SERVED_FILES:
        raise pytest.UsageError(f"add to SERVED_FILES in tests/conftest.py: {sorted(missing)}")
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "postgres_url" in fixtures:
            item.add_marker(pytest.mark.postgres)
        if "redis_server" in fixtures:
            item.add_marker(pytest.mark.redis)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: unknown under -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN201
    """Each test file is one unit of work for a pytest-xdist worker, and the files over the
    ``served`` registry together are one; units go out in collection order (make test:
    ``--no-loadscope-reorder``), the longest first."""
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndServed(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "served" if path in SERVED_FILES else path

    return FilesAndServed(config, log)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.hookimpl(trylast=True)  # after pytest-xdist has shut its workers down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a process a test started is still alive (then stop it). Runs in the
    controller only: the workers' children are checked once every worker is done."""
    if not Path("/proc").is_dir() or hasattr(session.config, "workerinput"):
        return
    distributed = session.config.pluginmanager.hasplugin("dsession")
    deadline = time.monotonic() + 10  # grace for processes stopping right now
    while (left := _processes_left_running(distributed)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not left:
        return
    for pid in left:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    lines = "\n".join(f"  pid {pid}: {command[:200]}" for pid, command in left.items())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"processes started by the tests were still running at the end (now killed):\n{lines}"
    if reporter is not None:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


PROJECT_ROOT = Path(__file__).resolve().parents[1]
# six product types that look and read differently, PER_CODE real rows each (model tests)
SIX_CODES = ("10", "1280", "1920", "1940", "2522", "2583")
PER_CODE = 40


def sample_dir() -> Path:
    """The real challenge sample: PRODCLASS_DATA_DIR, else ../shared/data/rakuten_sample."""
    configured = os.environ.get("PRODCLASS_DATA_DIR")
    path = Path(configured) if configured else PROJECT_ROOT.parent / "shared/data/rakuten_sample"
    return path.resolve()


@pytest.fixture(autouse=True)
def settings_from_the_environment() -> None:
    """Each test reads the settings its environment gives: a test before it on the same
    worker may have changed the environment and left the settings it read in the cache."""
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def sample() -> Path:
    path = sample_dir()
    if not (path / X_TRAIN).is_file():
        pytest.exit(f"the real sample data is missing at {path}; set PRODCLASS_DATA_DIR", 2)
    return path


def copy_subset(
    source: Path, dest: Path, row_ids: list[str] | None = None, per_modality: int = 12
) -> Path:
    """Copy real rows (and their photos) of the sample into ``dest``, in the challenge layout.

    Without ``row_ids``, takes ``per_modality`` rows each of text+image, text only, image only.
    """
    src, out = ChallengeLayout(source), ChallengeLayout(dest)
    x = pd.read_csv(src.x_train, index_col=0, dtype=str, keep_default_na=False)
    y = pd.read_csv(src.y_train, index_col=0, dtype=str, keep_default_na=False)
    x.index = x.index.astype(str)
    y.index = y.index.astype(str)
    if row_ids is None:
        has_image = pd.Series(
            [src.image_path(i, p).is_file() for i, p in zip(x["imageid"], x["productid"])],
            index=x.index,
        )
        has_text = (x["designation"] != "") | (x["description"] != "")
        groups = [
            x.index[has_text & has_image],
            x.index[has_text & ~has_image],
            x.index[~has_text & has_image],
        ]
        row_ids = [r for g in groups for r in list(g[:per_modality])]
    out.image_dir("train").mkdir(parents=True, exist_ok=True)
    out.image_dir("test").mkdir(parents=True, exist_ok=True)
    x.loc[row_ids].to_csv(out.x_train)
    y.loc[row_ids].to_csv(out.y_train)
    shutil.copy(src.x_test, out.x_test)
    for row_id in row_ids:
        image = src.image_path(x.at[row_id, "imageid"], x.at[row_id, "productid"])
        if image.is_file():
            shutil.copy(image, out.image_dir("train") / image.name)
    return dest


def copy_unlabelled(source: Path, dest: Path, rows: int) -> Path:
    """A challenge folder holding the first ``rows`` real unlabelled products (X_test) and
    their photos: what a clip-style fit aligns on besides its labelled pairs."""
    src, out = ChallengeLayout(source), ChallengeLayout(dest)
    x = read_features(src.x_test).head(rows)
    out.image_dir("test").mkdir(parents=True, exist_ok=True)
    x.to_csv(out.x_test)
    for imageid, productid in zip(x["imageid"], x["productid"]):
        photo = src.image_path(imageid, productid, "test")
        if photo.is_file():
            shutil.copy(photo, out.image_dir("test") / photo.name)
    return dest


@pytest.fixture
def subset(sample: Path, tmp_path: Path) -> Path:
    """A small real copy of the sample (36 rows, 12 per modality) that a test may corrupt."""
    return copy_subset(sample, tmp_path / "data")


@pytest.fixture
def isolated_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample: Path
) -> Iterator[Path]:
    """Settings pointing at the sample and at a fresh state folder (embedded MLflow store)."""
    state = tmp_path / "state"
    monkeypatch.setenv("PRODCLASS_STATE_DIR", str(state))
    monkeypatch.setenv("PRODCLASS_DATA_DIR", str(sample))
    monkeypatch.delenv("PRODCLASS_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PRODCLASS_PARAMS_FILE", str(PROJECT_ROOT / "params.yaml"))
    get_settings.cache_clear()
    yield state
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def sample_prepared(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole sample validated (every photo decoded) and split, once per run (read only:
    copy it to change it). For tests that assert a quality number, which the full sample
    backs; tests of mechanics use the six-code rows."""
    build = lambda out: prepare(validate(sample), out, SplitParams())  # noqa: E731
    return built_once(tmp_path_factory, "sample-prepared", build)


def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every pytest-xdist worker of this run sees: the run's base temporary folder
    (each worker's own base folder is one level below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """The folder ``name`` as ``build(folder)`` fills it, built once per test run however many
    workers ask: the first builds it under a file lock, the others wait for it and reuse it.
    Users read it only (a test that changes things works on a copy)."""
    from filelock import FileLock

    folder = shared_dir(tmp_path_factory) / f"built-once-{name}"
    done = folder / ".built"
    with FileLock(f"{folder}.lock"):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def six_code_ids(sample: Path) -> list[str]:
    """``PER_CODE`` real rows of each of ``SIX_CODES``, the first in the sample's order."""
    layout = ChallengeLayout(sample)
    rows = read_features(layout.x_train).join(read_labels(layout.y_train))
    return [r for code in SIX_CODES for r in rows.index[rows["prdtypecode"] == code][:PER_CODE]]


@pytest.fixture(scope="session")
def six_codes_data(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A challenge folder of the six-code rows and their photos (read only: copy to change)."""
    ids = six_code_ids(sample)
    return built_once(tmp_path_factory, "six-codes-data", lambda out: copy_subset(sample, out, ids))


@pytest.fixture(scope="session")
def six_codes_prepared(six_codes_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared folder of ``PER_CODE`` real rows of each of ``SIX_CODES`` (read only)."""
    return built_once(
        tmp_path_factory,
        "six-codes-prepared",
        lambda out: prepare(validate(six_codes_data), out, SplitParams()),
    )


__all__ = ["X_TEST", "Y_TRAIN", "copy_subset", "copy_unlabelled", "sample_dir"]
