"""Hyper-parameter search: an Optuna study that maximises a family's cross-validated weighted F1.

Why this shape:
- every trial is judged as the project judges any model choice (``training/cv.py``): the
  pooled out-of-fold weighted F1 over every labelled product, on the same hashed folds for
  every trial, so two trials differ by their parameters and not by the products that scored
  them (a single validation split is noisy enough to hide the differences a search chooses
  between);
- `prodclass tune` defaults to fewer folds than the train stage: a search ranks candidates,
  the train stage's cross-validation gives the reported estimate;
- after each fold the running mean of the fold scores goes to Optuna (step = fold index) and
  the median pruner stops a trial that is doing worse than earlier trials on the same folds,
  so a losing trial costs a fold instead of all of them (``FoldPruner``);
- one MLflow parent run ``tune-<family>`` per search, one nested child run per trial with its
  CV estimate and 95 % interval, so the MLflow UI compares trials side by side and the parent
  holds the answer (best params, estimate);
- the search space of a family is a small function of the trial (``SEARCH_SPACES``) whose
  values overlay the family's block of params.yaml: what is not searched keeps its set value;
- the winner is written back into params.yaml (``write_family_params``) with its comments,
  quoting and key order kept, so the next ``dvc repro`` trains the tuned model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd

from prodclass.data.prepare import META_FILE, load_prepared
from prodclass.models.registry import UnknownFamilyError, family_class
from prodclass.params import load_params
from prodclass.registry.tracking import configure_mlflow
from prodclass.settings import Settings
from prodclass.training.cv import FoldFacts, cross_validate, score
from prodclass.training.experiment import cv_metrics

log = logging.getLogger(__name__)

OBJECTIVE = "cv_all_weighted_f1"  # the cv_metrics key a trial is judged by


# ---- search spaces ----------------------------------------------------------------------
# Each returns the family parameters to try; keys must be fields of the family's Params.


def _tfidf_linear_space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "C": trial.suggest_float("C", 0.01, 10.0, log=True),
        "char_ngram_max": trial.suggest_int("char_ngram_max", 3, 6),
        "word_ngram_max": trial.suggest_int("word_ngram_max", 1, 3),
        "classifier": trial.suggest_categorical("classifier", ["linear_svc", "logreg"]),
    }


def _multimodal_effnet_space(trial: optuna.Trial) -> dict[str, Any]:
    values: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "hidden": trial.suggest_categorical("hidden", [128, 256, 512]),
        "dropout": trial.suggest_float("dropout", 0.1, 0.5),
        "modality_dropout": trial.suggest_float("modality_dropout", 0.0, 0.5),
        "text_dim": trial.suggest_categorical("text_dim", [32, 64, 128]),
        "trainable_blocks": trial.suggest_int("trainable_blocks", 0, 2),
    }
    # With no fine-tuned block there is no image learning rate to choose: a conditional
    # parameter keeps TPE from learning noise about it.
    if values["trainable_blocks"] > 0:
        values["image_lr"] = trial.suggest_float("image_lr", 3e-5, 1e-3, log=True)
    return values


def _text_lstm_space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        "dropout": trial.suggest_float("dropout", 0.1, 0.5),
    }


def _multimodal_clip_space(trial: optuna.Trial) -> dict[str, Any]:
    # Only the fusion head's knobs: every trial fine-tunes the towers on a CPU, so the space
    # stays small enough for a handful of trials to cover.
    return {
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "hidden": trial.suggest_categorical("hidden", [128, 256, 512]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
    }


SEARCH_SPACES: dict[str, Callable[[optuna.Trial], dict[str, Any]]] = {
    "tfidf-linear": _tfidf_linear_space,
    "multimodal-effnet": _multimodal_effnet_space,
    "text-lstm": _text_lstm_space,
    "multimodal-clip": _multimodal_clip_space,
}


def check_tunable(family: str) -> None:
    """Fail fast (before any data is prepared) on a family without a search space."""
    if family not in SEARCH_SPACES:
        known = ", ".join(sorted(SEARCH_SPACES))
        raise UnknownFamilyError(f"no search space for model family {family!r}; tunable: {known}")


# ---- pruning ----------------------------------------------------------------------------


class FoldPruner:
    """``on_fold`` of ``cross_validate``: report the running mean of the fold scores to Optuna,
    stop a losing trial between folds.

    The value at step k is the mean weighted F1 of folds 0..k; every trial has the same folds,
    so the pruner compares like with like. There is no check after the last fold: the trial
    has then cost everything pruning could save. Keeps what it reported so a pruned trial's
    curve can still be logged to its MLflow run.
    """

    def __init__(self, trial: optuna.Trial, folds: int) -> None:
        self.trial = trial
        self.folds = folds
        self.reported: list[tuple[int, float]] = []
        self._scores: list[float] = []

    def __call__(self, facts: FoldFacts) -> None:
        self._scores.append(facts.scores["weighted_f1"])
        running = float(np.mean(self._scores))
        self.trial.report(running, step=facts.fold)
        self.reported.append((facts.fold, running))
        if facts.fold < self.folds - 1 and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned after fold {facts.fold} (running weighted F1 {running:.4f})"
            )


def make_study(seed: int) -> optuna.Study:
    """In-memory study: seeded TPE (same seed, same proposals) and a median pruner.

    The pruner waits for 3 finished trials, then may stop a trial after any fold but the last
    (steps are fold indices, from 0): a fold of a few thousand products is already a steadier
    score than one validation split, and with 3 folds a later warm-up would leave one chance.
    """
    return optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )


# ---- the objective ----------------------------------------------------------------------


@dataclass
class CVObjective:
    """One trial: the family with the trial's values, cross-validated on ``products`` (every
    trial on the same folds), as a nested MLflow run of the active run. Its value is the
    pooled out-of-fold weighted F1 over all products."""

    products: pd.DataFrame
    family: str
    base_params: dict[str, Any]
    folds: int
    cv_seed: int

    def __call__(self, trial: optuna.Trial) -> float:
        sampled = SEARCH_SPACES[self.family](trial)
        trial.set_user_attr("family_params", sampled)
        params = {**self.base_params, **sampled}
        resolved = family_class(self.family).Params(**params)
        pruner = FoldPruner(trial, self.folds)

        def on_fold(facts: FoldFacts) -> None:
            mlflow.log_metrics(
                {"fold_weighted_f1": facts.scores["weighted_f1"],
                 "fold_fit_seconds": facts.fit_seconds},
                step=facts.fold,
            )  # fmt: skip
            pruner(facts)

        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True) as child:
            trial.set_user_attr("mlflow_run_id", child.info.run_id)
            mlflow.set_tags({"family": self.family, "stage": "tune", "optuna_trial": trial.number})
            mlflow.log_params({"model_family": self.family, **resolved.model_dump()})
            try:
                result = cross_validate(
                    self.products, self.family, params, self.folds, self.cv_seed, on_fold
                )
            except optuna.TrialPruned:
                _log_running(pruner)
                mlflow.set_tag("optuna_state", "pruned")
                mlflow.end_run(status="KILLED")
                log.info("trial %d pruned after fold %d", trial.number, pruner.reported[-1][0])
                raise
            _log_running(pruner)
            metrics = cv_metrics(score(result))
            mlflow.log_metrics(metrics | {"cv_ece": result.ece})
            mlflow.set_tag("optuna_state", "complete")
        trial.set_user_attr("cv_metrics", metrics)
        value = metrics[OBJECTIVE]
        log.info(
            "trial %d: CV weighted F1 %.4f [%.4f, %.4f] with %s",
            trial.number, value, metrics[f"{OBJECTIVE}_low"], metrics[f"{OBJECTIVE}_high"],
            sampled,
        )  # fmt: skip
        return value


def _log_running(pruner: FoldPruner) -> None:
    """The curve the pruner judged, on the trial's run: comparable across trials by fold."""
    for fold, value in pruner.reported:
        mlflow.log_metric("running_weighted_f1", value, step=fold)


# ---- the search -------------------------------------------------------------------------


@dataclass
class TuneResult:
    family: str
    parent_run_id: str
    tracking_uri: str
    folds: int
    n_products: int
    best_trial: int
    best_value: float  # the best trial's pooled out-of-fold weighted F1
    best_interval: tuple[float, float]  # its 95 % bootstrap interval
    best_params: dict[str, Any]  # the searched values of the best trial
    n_complete: int
    n_pruned: int
    trials: list[dict[str, Any]] = field(default_factory=list)


def tune_family(
    prepared_dir: Path,
    family: str,
    base_params: dict[str, Any],
    settings: Settings,
    n_trials: int,
    folds: int,
    cv_seed: int = 42,
    timeout: float | None = None,
    seed: int | None = None,
) -> TuneResult:
    """Search ``family``'s space for the best cross-validated weighted F1 over every labelled
    product of ``prepared_dir`` (its splits are ignored).

    ``base_params`` (the family's params.yaml block) holds the values that are not searched;
    ``cv_seed`` fixes the folds (the train stage uses the split seed), ``seed`` the sampler.
    """
    check_tunable(family)
    family_class(family)  # an unregistered or unimportable family fails before any trial
    if n_trials < 1:
        raise ValueError(f"--trials must be at least 1, got {n_trials}")
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    seed = settings.seed if seed is None else seed
    configure_mlflow(settings)
    # Optuna's own handler would print beside ours and repeat our per-trial lines: keep only
    # its warnings, through our logging.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    products = load_prepared(prepared_dir)
    meta = json.loads((prepared_dir / META_FILE).read_text())
    study = make_study(seed)
    objective = CVObjective(products, family, base_params, folds, cv_seed)

    with mlflow.start_run(run_name=f"tune-{family}") as parent:
        mlflow.set_tags({"family": family, "stage": "tune"})
        mlflow.log_params(
            {
                "model_family": family,
                "n_trials": n_trials,
                "timeout_seconds": timeout,
                "sampler": "TPE",
                "sampler_seed": seed,
                "pruner": "median per fold",
                "objective": OBJECTIVE,
                "cv_folds": folds,
                "cv_seed": cv_seed,
                "data_dir": meta["data_dir"],
                "manifest_sha256": meta["manifest_sha256"],
                "n_products": len(products),
            }
        )
        log.info(
            "tuning %s: %d trials, %d-fold CV on %d products", family, n_trials, folds,
            len(products),
        )  # fmt: skip
        study.optimize(objective, n_trials=n_trials, timeout=timeout, gc_after_trial=True)

        states = [t.state for t in study.trials]
        n_complete = states.count(optuna.trial.TrialState.COMPLETE)
        n_pruned = states.count(optuna.trial.TrialState.PRUNED)
        trials = [_trial_row(t) for t in study.trials]
        searched = sorted({name for t in study.trials for name in t.params})
        mlflow.log_param("search_space", ",".join(searched))
        mlflow.log_dict({"trials": trials}, "tune/trials.json")
        mlflow.log_metrics({"n_trials_complete": n_complete, "n_trials_pruned": n_pruned})
        if n_complete == 0:
            raise ValueError(
                f"no trial of {family} completed ({n_pruned} pruned); raise --trials or --timeout"
            )
        best = study.best_trial
        best_params = dict(best.user_attrs["family_params"])
        best_metrics = best.user_attrs["cv_metrics"]
        mlflow.log_params({f"best_{k}": v for k, v in best_params.items()})
        mlflow.log_metrics({f"best_{k}": v for k, v in best_metrics.items()})
        mlflow.set_tags(
            {"best_trial": best.number, "best_run_id": best.user_attrs["mlflow_run_id"]}
        )
        mlflow.log_dict(best_params, "tune/best_params.json")
    interval = (best_metrics[f"{OBJECTIVE}_low"], best_metrics[f"{OBJECTIVE}_high"])
    log.info("best trial %d: CV weighted F1 %.4f [%.4f, %.4f]", best.number, best.value, *interval)
    return TuneResult(
        family=family,
        parent_run_id=parent.info.run_id,
        tracking_uri=settings.tracking_uri,
        folds=folds,
        n_products=len(products),
        best_trial=best.number,
        best_value=float(best.value),
        best_interval=interval,
        best_params=best_params,
        n_complete=n_complete,
        n_pruned=n_pruned,
        trials=trials,
    )


def _trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial as trials.json lists it: its values, its CV estimate or where it was stopped."""
    metrics = trial.user_attrs.get("cv_metrics", {})
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value,
        "interval": [metrics[f"{OBJECTIVE}_low"], metrics[f"{OBJECTIVE}_high"]]
        if metrics
        else None,
        "running_weighted_f1": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
        "params": trial.user_attrs.get("family_params", {}),
        "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
    }


# ---- params.yaml ------------------------------------------------------------------------


def write_family_params(path: Path, family: str, values: dict[str, Any]) -> None:
    """Merge ``values`` into ``families.<family>`` of params.yaml, keeping comments and order.

    The new file is checked (params schema and the family's own Params) before it replaces the
    old one, so a failure leaves params.yaml as it was.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    yaml = YAML()  # round-trip mode: comments and key order survive
    yaml.preserve_quotes = True  # and quoting: `ocr: "off"` must not become a YAML 1.1 false
    document = yaml.load(path.read_text()) if path.is_file() else None
    if document is None:
        document = CommentedMap()
    families = document.get("families")
    if families is None:
        families = document["families"] = CommentedMap()
    block = families.get(family)
    if block is None:
        block = families[family] = CommentedMap()
    for key, value in values.items():
        block[key] = value

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as stream:
            yaml.dump(document, stream)
        if path.is_file():  # mkstemp makes the file private; keep the original's permissions
            os.chmod(tmp, path.stat().st_mode & 0o777)
        written = load_params(Path(tmp))
        family_class(family).Params(**written.family_params(family))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    log.info("wrote tuned %s params to %s: %s", family, path, values)
