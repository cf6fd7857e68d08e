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


class PromotionSection(_Strict):
    min_improvement: float = Field(0.0, ge=0)


class PipelineParams(_Strict):
    split: SplitSection = SplitSection()
    train: TrainSection = TrainSection()
    families: dict[str, dict[str, Any]] = {}
    promotion: PromotionSection = PromotionSection()

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
