"""Register a trained candidate and promote it only on evidence that it beats the champion.

Evidence: the paired cross-validation difference in weighted F1 on the products both models
predicted without having trained on them (each registered model carries its out-of-fold
predictions, so the champion is never refitted; products it never saw it simply predicts),
whose 95 % interval must lie above the margin. A candidate that
does not win becomes the ``challenger`` (the alias moves from any previous challenger).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from prodclass.registry import model_registry as reg
from prodclass.registry.tracking import configure_mlflow
from prodclass.settings import Settings
from prodclass.training.cv import (
    CVResult,
    paired_difference,
    per_class_changes,
    with_unseen_predictions,
)
from prodclass.training.metrics import classification_metrics
from prodclass.training.train import CV_DIR, TrainResult

log = logging.getLogger(__name__)


def champion_cv(name: str, version: str) -> CVResult | None:
    """The champion's out-of-fold predictions, or None when it was trained without CV."""
    try:
        return CVResult.load(reg.model_folder(f"models:/{name}/{version}") / CV_DIR)
    except FileNotFoundError:
        return None


def register_candidate(
    trained: TrainResult,
    report: dict[str, Any],
    settings: Settings,
    margin: float,
    max_class_drop: float = 1.0,
    products: pd.DataFrame | None = None,
) -> reg.PromotionDecision:
    """Register ``trained`` (its CV ``report`` as tags), compare it with the champion, move
    the aliases, and log the decision (MLflow tags/metrics on the candidate's run, journal).

    ``products``: the candidate's prepared frame; the champion then also predicts those it
    was never trained on (new and reviewed products), so the comparison covers them too.
    """
    configure_mlflow(settings)
    name = settings.registered_model_name
    candidate = CVResult.load(Path(trained.model_dir) / CV_DIR)
    champion = reg.champion_version(name)
    reference = champion_cv(name, champion) if champion is not None else None
    if reference is not None and products is not None:
        champion_model = reg.load_classifier(f"models:/{name}/{champion}")
        reference = with_unseen_predictions(reference, champion_model, products)
    difference, changes = None, None
    if reference is not None:
        difference = paired_difference(candidate, reference, "champion", subsets=("all",))["all"]
        changes = per_class_changes(candidate, reference)
    version = reg.register(
        trained.model_uri, name, report, {"family": trained.family, "run_id": trained.run_id}
    )
    interval = difference.weighted_f1 if difference is not None else None
    promoted, reason = reg.decide_promotion(
        (interval.mean, interval.low, interval.high) if interval is not None else None,
        margin,
        {code: row["f1_change"] for code, row in (changes or {}).items()},
        max_class_drop,
    )
    previous_challenger = reg.challenger_version(name)
    if promoted:
        reg.promote(name, version)
    else:
        reg.set_challenger(name, version)
    alias = reg.CHAMPION if promoted else reg.CHALLENGER
    log.info("version %s: %s (%s)", version, alias, reason)
    decision = reg.PromotionDecision(
        version=version,
        promoted=promoted,
        previous_champion=champion,
        candidate_weighted_f1=report["weighted_f1"],
        champion_weighted_f1=(
            classification_metrics(reference.labels, reference.predicted)["weighted_f1"]
            if reference is not None
            else None
        ),
        reason=reason,
        alias=alias,
        previous_challenger=previous_challenger,
        difference=interval.mean if interval else None,
        difference_low=interval.low if interval else None,
        difference_high=interval.high if interval else None,
        n_compared=difference.n if difference is not None else None,
    )
    _log_to_run(trained.run_id, decision, changes)
    _journal(settings, decision, changes)
    return decision


PROMOTION_REPORT = "reports/promotion.json"


def _log_to_run(
    run_id: str,
    decision: reg.PromotionDecision,
    per_class: dict[str, dict[str, float]] | None,
) -> None:
    """The decision on the candidate's training run: tags, the interval as metrics, and the
    whole decision with the per-class changes as ``reports/promotion.json`` (the web app)."""
    try:
        with mlflow.start_run(run_id=run_id):
            mlflow.log_dict(decision.to_dict() | {"per_class_changes": per_class}, PROMOTION_REPORT)
            mlflow.set_tags(
                {
                    "promotion_decision": "promoted" if decision.promoted else "not promoted",
                    "promotion_reason": decision.reason,
                    "registered_version": decision.version,
                }
            )
            if decision.difference is not None:
                mlflow.log_metrics(
                    {
                        "champion_difference_weighted_f1": decision.difference,
                        "champion_difference_weighted_f1_low": decision.difference_low,
                        "champion_difference_weighted_f1_high": decision.difference_high,
                    }
                )
    except Exception as exc:  # the registry decision stands even if the run cannot be updated
        log.warning("could not log the promotion decision to run %s: %s", run_id, exc)


def _journal(
    settings: Settings,
    decision: reg.PromotionDecision,
    per_class: dict[str, dict[str, float]] | None,
) -> None:
    """The decision, its interval and the per-class changes in the monitoring journal (and so
    in the web app)."""
    from prodclass.db.session import upgrade
    from prodclass.monitoring import journal

    verb = "promoted to champion" if decision.promoted else "kept as challenger"
    details = decision.to_dict() | {"per_class_changes": per_class}
    try:
        upgrade(settings.db_url)
        summary = f"version {decision.version} {verb}: {decision.reason}"
        journal.write(settings.db_url, "retraining", summary, details, decision.version)
    except Exception as exc:  # the registry decision stands even if the journal is down
        log.warning("could not write the retraining decision to the journal: %s", exc)
