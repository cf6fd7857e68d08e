"""Azure ML online endpoint scoring script: the same predictor as the API.

Azure ML calls ``init()`` once per worker (the registered model folder is under
``AZUREML_MODEL_DIR``) and ``run(raw_data)`` per request. The request body is the API's batch
JSON: ``{"products": [{"designation", "description", "product_id", "imageid",
"product_identifier", "image_base64"}], "top_k": 5}``; the answer is
``{"predictions": [...], "model": {...}}`` with the same fields as ``POST /predict/batch``, or
``{"error": reason}`` for a request that cannot be classified.
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
    predictor = Predictor(model, str(folder), os.environ.get("PRODCLASS_MODEL_VERSION"))


def run(raw_data: str | bytes) -> dict[str, Any]:
    if predictor is None:
        return {"error": "the model is not loaded (init() was not called)"}
    try:
        return predict_json(predictor, json.loads(raw_data))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"error": "the request body is not JSON"}
    except InvalidRequestError as exc:
        return {"error": str(exc)}
