"""Products sent as JSON (photos as base64), as the API's batch route and the Azure ML scoring
script receive them: decoded and checked the same way, every bad product named at once."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from prodclass.models.base import NoEmbeddingError
from prodclass.serving.api.schemas import BatchIn, ProductIn, validation_reason
from prodclass.serving.predictor import InvalidProductError, Predictor, ProductInput


class InvalidRequestError(ValueError):
    """A request that cannot be classified; the message names every problem."""


@dataclass
class ReceivedProduct:
    """A product as received: the model's input plus the ids the answer and the log echo."""

    input: ProductInput
    imageid: str | None = None
    product_identifier: str | None = None

    @classmethod
    def of(
        cls,
        designation: str = "",
        description: str = "",
        image: bytes | None = None,
        product_id: str | None = None,
        imageid: str | None = None,
        product_identifier: str | None = None,
    ) -> ReceivedProduct:
        """From raw fields (an empty photo is no photo)."""
        inputs = ProductInput(designation or "", description or "", image or None, product_id)
        return cls(inputs, imageid, product_identifier)


def received(product: ProductIn, position: int, problems: list[str]) -> ReceivedProduct:
    """Decode one JSON product (its text was checked storable by ``ProductIn``); a photo that
    is not base64 is added to ``problems``."""
    image = None
    if product.image_base64:
        try:
            image = base64.b64decode(product.image_base64, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"product {position}: image_base64 is not valid base64")
    return ReceivedProduct.of(
        product.designation,
        product.description,
        image,
        product.product_id,
        product.imageid,
        product.product_identifier,
    )


def check_all(predictor: Predictor, products: list[ReceivedProduct], problems: list[str]) -> None:
    """Raise InvalidProductError naming every product that cannot be classified."""
    for position, product in enumerate(products):
        if any(p.startswith(f"product {position}:") for p in problems):
            continue  # already refused while decoding
        try:
            predictor.check(product.input, position)
        except InvalidProductError as exc:
            problems.append(str(exc))
    if problems:
        problems.sort(key=lambda p: int(p.split(":")[0].removeprefix("product ")))
        shown = "; ".join(problems[:20])
        raise InvalidProductError(shown + (" ..." if len(problems) > 20 else ""))


def predict_json(predictor: Predictor, payload: Any, default_top_k: int = 5) -> dict[str, Any]:
    """The batch JSON in, the batch answer out (the Azure ML endpoint's whole job)."""
    try:
        batch = BatchIn.model_validate(payload)
    except ValidationError as exc:
        raise InvalidRequestError(f"invalid request: {validation_reason(exc.errors())}") from None
    problems: list[str] = []
    products = [received(p, i, problems) for i, p in enumerate(batch.products)]
    try:
        check_all(predictor, products, problems)
    except InvalidProductError as exc:
        raise InvalidRequestError(str(exc)) from None
    try:
        answers = predictor.predict(
            [p.input for p in products],
            top_k=batch.top_k or default_top_k,
            embed=batch.return_embedding,
        )
    except NoEmbeddingError as exc:  # vectors asked of a family without any: say so
        raise InvalidRequestError(str(exc)) from None
    return {
        "model": {
            "name": predictor.model_name,
            "family": predictor.family,
            "version": predictor.model_version,
            "uri": predictor.model_uri,
        },
        "predictions": [
            {
                "prdtypecode": answer.prdtypecode,
                "category": vars(answer.top[0]),
                "top": [vars(score) for score in answer.top],
                "inputs": answer.inputs,
                "product_id": product.input.product_id,
                "imageid": product.imageid,
                "product_identifier": product.product_identifier,
            }
            | (
                {"embeddings": [vars(e) for e in answer.embeddings]}
                if answer.embeddings is not None
                else {}
            )
            for product, answer in zip(products, answers)
        ],
    }
