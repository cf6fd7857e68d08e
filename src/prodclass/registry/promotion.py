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
) -> reg.PromotionDecision:
    configure_mlflow(settings)
    name = settings.registered_model_name
    champion = reg.champion_version(name)
    champion_f1 = None
    if champion is not None:
        champion_report = evaluate_prepared(
            prepared_dir, "test", f"models:/{name}/{champion}", latency=False
        )
        champion_f1 = champion_report["weighted_f1"]
    version = reg.register(
        trained.model_uri,
        name,
        test_report,
        {"family": trained.family, "run_id": trained.run_id},
    )
    promoted, reason = reg.decide_promotion(
        test_report["weighted_f1"], champion_f1, min_improvement
    )
    previous_challenger = reg.challenger_version(name)
    if promoted:
        reg.promote(name, version)
    else:
        reg.set_challenger(name, version)
    alias = reg.CHAMPION if promoted else reg.CHALLENGER
    log.info("version %s: %s (%s)", version, alias, reason)
    return reg.PromotionDecision(
        version=version,
        promoted=promoted,
        previous_champion=champion,
        candidate_weighted_f1=test_report["weighted_f1"],
        champion_weighted_f1=champion_f1,
        reason=reason,
        alias=alias,
        previous_challenger=previous_challenger,
    )
