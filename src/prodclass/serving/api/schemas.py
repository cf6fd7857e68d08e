"""Request and response bodies of the API (the OpenAPI document is generated from them)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from prodclass.db.tables import User
from prodclass.db.users import email_of


class CategoryOut(BaseModel):
    prdtypecode: int
    name_fr: str
    name_en: str
    probability: float


class ModelRef(BaseModel):
    name: str
    version: str | None
    family: str
    uri: str


class PredictionOut(BaseModel):
    prediction_id: str
    prdtypecode: int
    category: CategoryOut = Field(description="The best category (top[0]).")
    top: list[CategoryOut] = Field(description="The k most likely categories, best first.")
    inputs: str = Field(description="What the model had: text, image or text+image.")
    model: ModelRef
    product_id: str | None = None
    imageid: str | None = None
    product_identifier: str | None = None
    latency_ms: float


class ProductIn(BaseModel):
    """One product of a JSON batch; the photo travels as base64."""

    model_config = ConfigDict(extra="forbid")

    designation: str = ""
    description: str = ""
    product_id: str | None = None
    imageid: str | None = None
    product_identifier: str | None = None
    image_base64: str | None = Field(default=None, description="The photo's bytes, base64.")


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    products: list[ProductIn] = Field(min_length=1)
    top_k: int | None = Field(default=None, ge=1, le=27)


class BatchOut(BaseModel):
    predictions: list[PredictionOut]


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str
    password: str
    role: str
    email: str | None = None


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str | None = None
    role: str | None = None
    is_active: bool | None = None
    email: str | None = None


class UserOut(BaseModel):
    username: str
    role: str
    is_active: bool
    created_at: datetime
    email: str | None = None  # stored encrypted; shown to admins and to the user

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            username=user.username,
            role=user.role,
            is_active=user.is_active,
            created_at=user.created_at,
            email=email_of(user),
        )


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prdtypecode: int = Field(description="The true category of the product.")
    comment: str = Field(default="", max_length=2000)


class FeedbackOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    prediction_id: str
    username: str
    prdtypecode: int
    is_correction: bool
    comment: str
    created_at: datetime


class ModelVersionOut(BaseModel):
    version: str
    aliases: list[str]
    run_id: str | None
    family: str
    weighted_f1: str | None = None
    macro_f1: str | None = None
    accuracy: str | None = None
    created: int | None = None


class LoadStatusOut(BaseModel):
    uri: str
    version: str | None
    state: str
    started: float
    finished: float | None = None
    error: str | None = None
    source: str = "registry"  # "cache": the local copy (the registry did not answer)


class CurrentModelOut(BaseModel):
    serving: ModelRef | None
    last_load: LoadStatusOut | None


class PromotionOut(BaseModel):
    champion: str
    previous_champion: str | None
    load: LoadStatusOut | None
