"""Register a trained candidate and promote it only if it beats the champion.

Both are scored on the same fixed test split, so the comparison is like for like even when the
champion was trained on an older data version. A candidate that does not win becomes the
``challenger`` (the alias moves from any previous challenger).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prodclass.registry import model_registry as reg
from prodclass.registry.tracking import configure_mlflow
from prodclass.settings import Settings
from prodclass.training.evaluate import evaluate_prepared
from prodclass.training.train import TrainResult

log = logging.getLogger(__name__)


def register_candidate(
    trained: TrainResult,
    test_report: dict[str, Any],
    prepared_dir: Path,
    settings: Settings,
    min_improvement: float,
    max_class_drop: float = 1.0,
) -> reg.PromotionDecision:
    configure_mlflow(settings)
    name = settings.registered_model_name
    champion = reg.champion_version(name)
    champion_f1, champion_per_class = None, None
    if champion is not None:
        champion_report = evaluate_prepared(
            prepared_dir, "test", f"models:/{name}/{champion}", latency=False
        )
        champion_f1 = champion_report["weighted_f1"]
        champion_per_class = _per_class_f1(champion_report)
    version = reg.register(
        trained.model_uri,
        name,
        test_report,
        {"family": trained.family, "run_id": trained.run_id},
    )
    promoted, reason = reg.decide_promotion(
        test_report["weighted_f1"],
        champion_f1,
        min_improvement,
        _per_class_f1(test_report),
        champion_per_class,
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
        candidate_weighted_f1=test_report["weighted_f1"],
        champion_weighted_f1=champion_f1,
        reason=reason,
        alias=alias,
        previous_challenger=previous_challenger,
    )
    _journal(settings, decision, test_report, champion_per_class)
    return decision


def _per_class_f1(report: dict[str, Any]) -> dict[str, float]:
    return {str(code): float(row["f1"]) for code, row in report.get("per_class", {}).items()}


def _journal(
    settings: Settings,
    decision: reg.PromotionDecision,
    test_report: dict[str, Any],
    champion_per_class: dict[str, float] | None,
) -> None:
    """The decision and its numbers in the monitoring journal (and so in the web app)."""
    from prodclass.db.session import upgrade
    from prodclass.monitoring import journal

    verb = "promoted to champion" if decision.promoted else "kept as challenger"
    details = decision.to_dict() | {
        "candidate_per_class_f1": _per_class_f1(test_report),
        "champion_per_class_f1": champion_per_class,
        "n_test": test_report.get("n"),
    }
    try:
        upgrade(settings.db_url)
        summary = f"version {decision.version} {verb}: {decision.reason}"
        journal.write(settings.db_url, "retraining", summary, details, decision.version)
    except Exception as exc:  # the registry decision stands even if the journal is down
        log.warning("could not write the retraining decision to the journal: %s", exc)
