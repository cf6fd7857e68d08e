"""Typed view of params.yaml (the DVC parameters): unknown keys and wrong types are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitSection(_Strict):
    val_size: float = Field(0.15, gt=0, lt=1)
    test_size: float = Field(0.15, gt=0, lt=1)
    seed: int = 42


class TrainSection(_Strict):
    model_family: str = "tfidf-linear"
    folds: int = Field(5, ge=2)  # cross-validation folds before the refit on every label


class PromotionSection(_Strict):
    # the paired CV difference in weighted F1 (candidate - champion) must have the lower
    # bound of its 95 % interval above this margin
    min_improvement: float = Field(0.0, ge=0)
    # no class's out-of-fold F1 may fall by more than this against the champion's
    max_class_drop: float = Field(1.0, ge=0, le=1)


class MonitoringSection(_Strict):
    p_value: float = Field(0.01, gt=0, lt=1)  # significance of a drift test
    psi: float = Field(0.2, ge=0)  # population stability index that counts as a real shift
    min_samples: int = Field(50, ge=10)  # fewer logged products: no decision
    embedding_samples: int = Field(300, ge=10)
    permutations: int = Field(200, ge=10)
    retrain_min_labels: int = Field(200, ge=1)  # new reviewed labels that trigger a retraining


class PipelineParams(_Strict):
    split: SplitSection = SplitSection()
    train: TrainSection = TrainSection()
    families: dict[str, dict[str, Any]] = {}
    promotion: PromotionSection = PromotionSection()
    monitoring: MonitoringSection = MonitoringSection()

    def family_params(self, family: str) -> dict[str, Any]:
        return dict(self.families.get(family, {}))


class ParamsError(ValueError):
    pass


def load_params(path: Path | None) -> PipelineParams:
    """Read params.yaml (defaults when the file does not exist)."""
    if path is None or not Path(path).is_file():
        return PipelineParams()
    raw = yaml.safe_load(Path(path).read_text()) or {}
    try:
        return PipelineParams(**raw)
    except ValidationError as exc:
        raise ParamsError(f"{path}: {exc}") from exc
