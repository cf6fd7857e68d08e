"""The model registry: log, register, compare, promote and roll back (MLflow aliases).

The ``champion`` alias is what serving loads. Every move of it is pushed on a history kept as a
registered-model tag, so ``rollback`` restores the previous champion in one step. The
``challenger`` alias marks the latest registered candidate that did not beat the champion, so it
can be compared with it (shadow traffic, the UI) without anyone noting a version number.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from prodclass.models.base import MODEL_CARD, ProductClassifier
from prodclass.models.registry import load_model_dir
from prodclass.registry.errors import RegistryError
from prodclass.registry.pyfunc import MODEL_DIR_ARTIFACT, ProdclassPyfunc, predict_frame

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
METRIC_TAGS = ("weighted_f1", "macro_f1", "accuracy")


def log_model(classifier: ProductClassifier, model_dir: Path, example: pd.DataFrame) -> str:
    """Log a saved model folder as a pyfunc model of the active run; return its model URI."""
    from prodclass.serving.predictor import Predictor

    output = predict_frame(Predictor(classifier, str(model_dir)), example)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=ProdclassPyfunc(),
        artifacts={MODEL_DIR_ARTIFACT: str(model_dir)},
        signature=infer_signature(example, output),
        input_example=example,
        pip_requirements=model_requirements(),
    )
    return info.model_uri


def model_requirements() -> list[str]:
    """The pip requirements a logged model records: prodclass's runtime dependencies at the
    versions it was trained with. Stated rather than inferred: MLflow's inference loads the
    model once more in a subprocess to watch its imports (seconds per logged model, and blind
    to what a family imports only when it predicts)."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    pins = set()
    for spec in requires("prodclass") or []:
        requirement = Requirement(spec)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an extra (tests, development tools)
        try:
            extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
            pins.add(f"{requirement.name}{extras}=={version(requirement.name)}")
        except PackageNotFoundError:  # declared but not installed here: nothing to pin
            continue
    return sorted(pins)


def model_folder(uri: str) -> Path:
    """The local model folder (with ``model.json``) of a folder, ``runs:/…`` or ``models:/…``
    URI (registry artifacts are downloaded)."""
    path = Path(uri)
    if (path / MODEL_CARD).is_file():
        return path
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as exc:
        raise RegistryError(f"cannot load model {uri}: {exc.message}") from exc
    # pyfunc keeps an artifact folder under artifacts/<folder name>; a plain folder URI is direct
    cards = [local / MODEL_CARD, *sorted(local.glob(f"artifacts/*/{MODEL_CARD}"))]
    for card in cards:
        if card.is_file():
            return card.parent
    raise RegistryError(f"{uri} is not a prodclass model (no {MODEL_CARD} in its artifacts)")


def load_classifier(uri: str) -> ProductClassifier:
    """Load a classifier from a folder, ``runs:/…``, ``models:/name@alias`` or ``/version``."""
    return load_model_dir(model_folder(uri))


def resolve_version(uri: str) -> str | None:
    """The registered version a ``models:/name@alias`` or ``models:/name/N`` URI points to now
    (None for folders and run URIs, or an alias that points nowhere)."""
    if not uri.startswith("models:/"):
        return None
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return alias_version(name, alias)
    name, _, version = ref.partition("/")
    return version or None


def register(model_uri: str, name: str, metrics: dict[str, Any], extra_tags: dict[str, str]) -> str:
    """Register a logged model as a new version, tagged with its test metrics; return version."""
    version = mlflow.register_model(model_uri, name).version
    client = MlflowClient()
    for key in METRIC_TAGS:
        if metrics.get(key) is not None:
            client.set_model_version_tag(name, version, key, str(metrics[key]))
    for key, value in extra_tags.items():
        client.set_model_version_tag(name, version, key, value)
    return str(version)


def alias_version(name: str, alias: str) -> str | None:
    """The version an alias points to, or None (no such alias or model)."""
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_version(name: str) -> str | None:
    return alias_version(name, CHAMPION)


def require_version(name: str, ref: str) -> str:
    """The registered version ``ref`` names: a version number, or an alias (``champion``,
    ``challenger``); RegistryError says why there is none."""
    if not ref.isdigit():
        version = alias_version(name, ref)
        if version is None:
            raise RegistryError(f"model {name} has no version or alias {ref!r}")
        return version
    try:
        MlflowClient().get_model_version(name, ref)
    except MlflowException:
        raise RegistryError(f"model {name} has no version {ref}") from None
    return ref


def challenger_version(name: str) -> str | None:
    return alias_version(name, CHALLENGER)


def set_challenger(name: str, version: str) -> str | None:
    """Point ``challenger`` at ``version`` (an alias names one version: it moves); return the
    previous challenger (or None)."""
    previous = challenger_version(name)
    MlflowClient().set_registered_model_alias(name, CHALLENGER, str(version))
    log.info("model %s version %s is now %s (was %s)", name, version, CHALLENGER, previous)
    return previous


def _history(client: MlflowClient, name: str) -> list[str]:
    tags = client.get_registered_model(name).tags
    return list(json.loads(tags.get(HISTORY_TAG, "[]")))


def promote(name: str, version: str) -> str | None:
    """Make ``version`` the champion; return the previous champion (or None).

    If ``version`` was the challenger, it loses that alias.
    """
    client = MlflowClient()
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise RegistryError(f"model {name} has no version {version}") from None
    previous = champion_version(name)
    if previous == str(version):
        return previous
    history = _history(client, name)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)
    history.append(str(version))
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    if challenger_version(name) == str(version):  # a champion no longer challenges itself
        client.delete_registered_model_alias(name, CHALLENGER)
    log.info("model %s version %s is now %s (was %s)", name, version, CHAMPION, previous)
    return previous


def rollback(name: str) -> tuple[str, str]:
    """Give the champion alias back to the previous champion; return (from, to)."""
    client = MlflowClient()
    try:
        history = _history(client, name)
    except MlflowException:
        raise RegistryError(f"no registered model named {name}") from None
    current = champion_version(name)
    if current is None or len(history) < 2:
        raise RegistryError(f"model {name} has no previous champion to roll back to")
    history.pop()
    target = history[-1]
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    return current, target


def list_versions(name: str) -> list[dict[str, Any]]:
    """Versions newest first, with aliases and metric tags."""
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
        # search results leave aliases empty; the registered model knows them
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        return []
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(a for a, v in aliases.items() if str(v) == str(mv.version)),
                "run_id": mv.run_id,
                "family": mv.tags.get("family", ""),
                **{k: mv.tags.get(k) for k in METRIC_TAGS},
                "created": mv.creation_timestamp,
            }
        )
    return rows


@dataclass
class PromotionDecision:
    version: str
    promoted: bool
    previous_champion: str | None
    candidate_weighted_f1: float  # cross-validated (out of fold)
    champion_weighted_f1: float | None  # on the products both predicted out of fold
    reason: str
    alias: str = CHAMPION  # CHAMPION when promoted, else CHALLENGER
    previous_challenger: str | None = None
    # paired CV difference in weighted F1 (candidate - champion) and its 95 % interval
    difference: float | None = None
    difference_low: float | None = None
    difference_high: float | None = None
    n_compared: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    difference: tuple[float, float, float] | None,
    margin: float,
    f1_changes: dict[str, float] | None = None,
    max_class_drop: float = 1.0,
) -> tuple[bool, str]:
    """Promote when there is no champion to compare with (``difference`` None), or when the
    paired CV difference in weighted F1 ``(estimate, low, high)`` has its interval's lower
    bound above ``margin`` and no product type loses more than ``max_class_drop`` F1
    (``f1_changes``: candidate minus champion per prdtypecode).

    Why the lower bound: a point gain smaller than the noise of the products is no evidence,
    and a champion replaced by an equal model only costs a deployment.
    """
    if difference is None:
        return True, "no champion with a cross-validation record to compare with"
    estimate, low, high = difference
    shown = f"paired CV weighted F1 difference {estimate:+.4f} [{low:+.4f}, {high:+.4f}]"
    if low <= margin:
        return False, f"{shown}: the interval's lower bound is not above {margin}"
    worst = min((f1_changes or {}).items(), key=lambda kv: kv[1], default=(None, 0.0))
    if worst[0] is not None and -worst[1] > max_class_drop:
        return False, (
            f"{shown} but class {worst[0]} loses {-worst[1]:.4f} F1 (tolerance {max_class_drop})"
        )
    return True, f"{shown}: better than the champion beyond the margin {margin}"


def version_artifact(name: str, version: str, artifact_path: str) -> Path:
    """A file of the run that produced a registered version (e.g. its test report), local."""
    client = MlflowClient()
    try:
        run_id = client.get_model_version(name, version).run_id
    except MlflowException:
        raise RegistryError(f"model {name} has no version {version}") from None
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path))
    except (MlflowException, OSError):
        raise RegistryError(
            f"version {version} has no {artifact_path} (was it evaluated with --train-report?)"
        ) from None
