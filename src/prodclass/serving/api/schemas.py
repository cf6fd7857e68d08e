"""Request and response bodies of the API (the OpenAPI document is generated from them)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from prodclass.db.tables import User
from prodclass.db.users import email_of


def unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored as sent, or None. PostgreSQL text holds no NUL character,
    and a lone surrogate (JSON may carry ``"\\ud800"``; pydantic refuses some itself) has no
    UTF-8 encoding at all: such text is refused with the reason rather than silently changed."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not a valid unicode string (a lone surrogate), which cannot be stored"
    return None


def _storable(text: str) -> str:
    if problem := unstorable(text):
        raise ValueError(problem)
    return text


# Every text field the API stores (users, feedback, predictions) is of this type.
Storable = Annotated[str, AfterValidator(_storable)]


class ErrorOut(BaseModel):
    """Every error answer (4xx, 5xx): the reason in one sentence."""

    detail: str


def validation_reason(errors: Sequence[Any], shown: int = 20) -> str:
    """Validation errors as one sentence naming each field and what is wrong. The input is
    never echoed (NaN, Infinity or a lone surrogate cannot be rendered as JSON), and the
    result always can be: field names coming from the request are escaped and shortened."""
    parts = []
    for error in errors[:shown]:
        where = ".".join(str(part)[:80] for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg"))
    reason = "; ".join(map(str, parts)) + (" ..." if len(errors) > shown else "")
    return reason.encode("utf-8", "backslashreplace").decode("utf-8") or "invalid request"


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


class EmbeddingOut(BaseModel):
    """One product's vector for one modality, in the serving model's own space."""

    modality: Literal["text", "image"] = Field(
        description="What the vector represents: the title + description, or the photo."
    )
    dimension: int = Field(description="The vector's length.")
    values: list[float] = Field(
        description="The whole vector (dense), or its non-zero values when `indices` is set."
    )
    indices: list[int] | None = Field(
        default=None,
        description="Sparse vectors (the TF-IDF text vectors): the position of each value; "
        "every other position is 0. None: `values` is the whole vector.",
    )
    shared_space: bool = Field(
        description="True: text and photo vectors of this model live in one space and may be "
        "compared by cosine (clip-style); False: compare a modality with the same modality only."
    )


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
    arm: str = Field(
        default="champion",
        description="Which model answered: champion, challenger (a live A/B test gave this "
        "product to the challenger), or requested (the version asked for by model_version).",
    )
    embeddings: list[EmbeddingOut] | None = Field(
        default=None,
        description="Only when asked (`return_embedding`): the product in the serving model's "
        "space, one vector per modality the product has. Absent otherwise.",
    )


class ProductIn(BaseModel):
    """One product of a JSON batch; the photo travels as base64."""

    model_config = ConfigDict(extra="forbid")

    # the limits of POST /predict's form fields (and of the prediction log's columns)
    designation: Storable = Field(default="", max_length=10_000)
    description: Storable = Field(default="", max_length=100_000)
    product_id: Storable | None = Field(default=None, max_length=64)
    imageid: Storable | None = Field(default=None, max_length=64)
    product_identifier: Storable | None = Field(default=None, max_length=128)
    image_base64: str | None = Field(default=None, description="The photo's bytes, base64.")


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    products: list[ProductIn] = Field(min_length=1)
    top_k: int | None = Field(default=None, ge=1, le=27)
    return_embedding: bool = Field(
        default=False, description="Also answer each product's vectors (`embeddings`)."
    )


ModelVersionRef = Annotated[
    str,
    Field(
        max_length=32,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="A registered version number, or an alias (champion, challenger); "
        "admins and reviewers only.",
    ),
]


class PredictBatchIn(BatchIn):
    model_version: ModelVersionRef | None = None


class BatchOut(BaseModel):
    predictions: list[PredictionOut]


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Storable
    password: Storable
    role: Storable
    email: Storable | None = None


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: Storable | None = None
    role: Storable | None = None
    is_active: bool | None = None
    email: Storable | None = None


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
    comment: Storable = Field(default="", max_length=2000)


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
