"""Hyper-parameter search: an Optuna study that maximises a family's validation weighted F1.

Why this shape:
- one MLflow parent run ``tune-<family>`` per search, one nested child run per trial, so the
  MLflow UI compares trials side by side and the parent holds the answer (best params, value);
- the search space of a family is a small function of the trial (``SEARCH_SPACES``) whose
  values overlay the family's block of params.yaml: what is not searched keeps its set value;
- torch families report each epoch's validation F1 through ``model.epoch_callback``, and the
  median pruner stops a trial that is doing worse than the median of earlier trials at the
  same epoch (``PruningCallback``);
- the winner is written back into params.yaml (``write_family_params``) with its comments and
  key order kept, so the next ``dvc repro`` trains the tuned model.
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
import optuna

from prodclass.data.prepare import META_FILE, load_prepared
from prodclass.models.registry import UnknownFamilyError, create, family_class
from prodclass.params import load_params
from prodclass.registry.tracking import configure_mlflow
from prodclass.settings import Settings
from prodclass.training.evaluate import evaluate_model
from prodclass.training.metrics import summary

log = logging.getLogger(__name__)


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


class PruningCallback:
    """``on_epoch_end`` for torch families: report the epoch's val F1, stop a losing trial.

    Keeps what it reported so a pruned trial's curve can still be logged to its MLflow run.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.reported: list[tuple[int, float]] = []

    def __call__(self, epoch: int, val_f1: float) -> None:
        self.trial.report(val_f1, step=epoch)
        self.reported.append((epoch, val_f1))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} (val weighted F1 {val_f1:.4f})")


def make_study(seed: int) -> optuna.Study:
    """In-memory study: seeded TPE (same seed, same proposals) and a median pruner.

    The pruner waits for 3 finished trials and lets every trial run 2 epochs (steps are epoch
    numbers, from 1; pruning starts at step 3): earlier medians are mostly noise.
    """
    return optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3),
    )


# ---- the search -------------------------------------------------------------------------


@dataclass
class TuneResult:
    family: str
    parent_run_id: str
    tracking_uri: str
    best_trial: int
    best_value: float
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
    timeout: float | None = None,
    seed: int | None = None,
) -> TuneResult:
    """Search ``family``'s space for the best val weighted F1 on ``prepared_dir``.

    ``base_params`` (the family's params.yaml block) holds the values that are not searched.
    """
    check_tunable(family)
    family_class(family)  # an unregistered or unimportable family fails before any trial
    if n_trials < 1:
        raise ValueError(f"--trials must be at least 1, got {n_trials}")
    space = SEARCH_SPACES[family]
    seed = settings.seed if seed is None else seed
    configure_mlflow(settings)
    # Optuna's own handler would print beside ours and repeat our per-trial lines: keep only
    # its warnings, through our logging.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    train = load_prepared(prepared_dir, "train")
    val = load_prepared(prepared_dir, "val")
    meta = json.loads((prepared_dir / META_FILE).read_text())
    study = make_study(seed)

    def objective(trial: optuna.Trial) -> float:
        sampled = space(trial)
        trial.set_user_attr("family_params", sampled)
        model = create(family, {**base_params, **sampled})
        callback = PruningCallback(trial)
        model.epoch_callback = callback
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True) as child:
            trial.set_user_attr("mlflow_run_id", child.info.run_id)
            mlflow.set_tags({"family": family, "stage": "tune", "optuna_trial": trial.number})
            mlflow.log_params({"model_family": family, **model.params.model_dump()})
            try:
                facts = model.fit(train, val)
            except optuna.TrialPruned:
                for epoch, value in callback.reported:
                    mlflow.log_metric("epoch_val_weighted_f1", value, step=epoch)
                mlflow.set_tag("optuna_state", "pruned")
                mlflow.end_run(status="KILLED")
                log.info("trial %d pruned after epoch %d", trial.number, callback.reported[-1][0])
                raise
            mlflow.log_metrics({k: float(v) for k, v in facts.items() if _is_number(v)})
            # Per-epoch curves under their own names: the final val metrics below stay the
            # latest values of their keys.
            for epoch in facts.get("history", []):
                step = int(epoch["epoch"])
                mlflow.log_metrics(
                    {f"epoch_{k}": v for k, v in epoch.items() if k != "epoch"}, step=step
                )
            validation, _ = evaluate_model(
                model, val, model_uri=f"tune-{family}/{child.info.run_name}"
            )
            metrics = {f"val_{k}": v for k, v in summary(validation).items() if v is not None}
            mlflow.log_metrics(metrics)
            for modality, numbers in validation["by_modality"].items():
                mlflow.log_metric(f"val_{modality}_weighted_f1", numbers["weighted_f1"])
            mlflow.set_tag("optuna_state", "complete")
        value = float(validation["weighted_f1"])
        log.info("trial %d: val weighted F1 %.4f with %s", trial.number, value, sampled)
        return value

    with mlflow.start_run(run_name=f"tune-{family}") as parent:
        mlflow.set_tags({"family": family, "stage": "tune"})
        mlflow.log_params(
            {
                "model_family": family,
                "n_trials": n_trials,
                "timeout_seconds": timeout,
                "sampler": "TPE",
                "sampler_seed": seed,
                "pruner": "median",
                "data_dir": meta["data_dir"],
                "manifest_sha256": meta["manifest_sha256"],
                "n_train": len(train),
                "n_val": len(val),
            }
        )
        log.info("tuning %s: %d trials on %d products", family, n_trials, len(train))
        study.optimize(objective, n_trials=n_trials, timeout=timeout, gc_after_trial=True)

        states = [t.state for t in study.trials]
        n_complete = states.count(optuna.trial.TrialState.COMPLETE)
        n_pruned = states.count(optuna.trial.TrialState.PRUNED)
        trials = [
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "params": t.user_attrs.get("family_params", {}),
                "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            }
            for t in study.trials
        ]
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
        mlflow.log_params({f"best_{k}": v for k, v in best_params.items()})
        mlflow.log_metric("best_val_weighted_f1", float(best.value))
        mlflow.set_tags(
            {"best_trial": best.number, "best_run_id": best.user_attrs["mlflow_run_id"]}
        )
        mlflow.log_dict(best_params, "tune/best_params.json")
    log.info("best trial %d: val weighted F1 %.4f", best.number, best.value)
    return TuneResult(
        family=family,
        parent_run_id=parent.info.run_id,
        tracking_uri=settings.tracking_uri,
        best_trial=best.number,
        best_value=float(best.value),
        best_params=best_params,
        n_complete=n_complete,
        n_pruned=n_pruned,
        trials=trials,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
