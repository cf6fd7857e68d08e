"""Azure ML online endpoint scoring script: the same predictor as the API.

Azure ML calls ``init()`` once per worker (the registered model folder is under
``AZUREML_MODEL_DIR``) and ``run(raw_data)`` per request. The request body is the API's batch
JSON: ``{"products": [{"designation", "description", "product_id", "imageid",
"product_identifier", "image_base64"}], "top_k": 5}``; the answer is
``{"predictions": [...], "model": {"name", "version", "family", "uri"}}`` with the same fields
as ``POST /predict/batch``, or ``{"error": reason}`` for a request that cannot be classified.
An API with ``PRODCLASS_SCORING_URL`` forwards its checked products here
(``prodclass.serving.remote_predictor``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prodclass.serving.json_products import InvalidRequestError, predict_json
from prodclass.serving.predictor import Predictor

predictor: Predictor | None = None


def init() -> None:
    """Load the model folder Azure ML mounted (searched for its model.json)."""
    global predictor
    from prodclass.models.base import MODEL_CARD
    from prodclass.models.registry import load_model_dir

    root = Path(os.environ["AZUREML_MODEL_DIR"])
    cards = sorted(root.rglob(MODEL_CARD), key=lambda p: len(p.parts))
    if not cards:
        raise RuntimeError(f"no prodclass model (no {MODEL_CARD}) under {root}")
    folder = cards[0].parent
    model = load_model_dir(folder)
    model.inference_threads = int(os.environ.get("PRODCLASS_API_TORCH_THREADS", "1"))
    name, version = _registered_as(folder)
    predictor = Predictor(model, str(folder), version, model_name=name)


def _registered_as(folder: Path) -> tuple[str | None, str | None]:
    """The model's name and version for answers: PRODCLASS_REGISTERED_MODEL_NAME and
    PRODCLASS_MODEL_VERSION (the registry version `prodclass deploy azureml` sets), else the
    Azure ML model's, from where Azure ML mounts it (.../azureml-models/NAME/VERSION/...)."""
    parts = folder.resolve().parts
    mounted = parts[parts.index("azureml-models") + 1 :] if "azureml-models" in parts else ()
    name = os.environ.get("PRODCLASS_REGISTERED_MODEL_NAME") or (mounted[0] if mounted else None)
    version = os.environ.get("PRODCLASS_MODEL_VERSION") or (
        mounted[1] if len(mounted) > 1 else None
    )
    return name, version


def run(raw_data: str | bytes) -> dict[str, Any]:
    if predictor is None:
        return {"error": "the model is not loaded (init() was not called)"}
    try:
        return predict_json(predictor, json.loads(raw_data))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"error": "the request body is not JSON"}
    except InvalidRequestError as exc:
        return {"error": str(exc)}
