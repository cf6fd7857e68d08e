"""The Azure ML scoring script, called as Azure ML calls it (init, then run with JSON), on a
real registered model laid out as Azure ML mounts it, with real sample products."""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil

import pytest

from prodclass.registry.model_registry import model_folder
from prodclass.serving.predictor import Predictor, ProductInput
from tests.conftest import PROJECT_ROOT


@pytest.fixture
def score(served, tmp_path, monkeypatch):
    """score.py with AZUREML_MODEL_DIR holding the registered multimodal version."""
    name = served.settings.registered_model_name
    folder = model_folder(f"models:/{name}/{served.multimodal_version}")
    mounted = tmp_path / "azureml-models" / name / served.multimodal_version
    shutil.copytree(folder, mounted / "model")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "azureml-models"))
    monkeypatch.setenv("PRODCLASS_MODEL_VERSION", served.multimodal_version)
    spec = importlib.util.spec_from_file_location("score", PROJECT_ROOT / "deploy/azureml/score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.init()
    return module


def test_run_answers_like_the_api_predictor(score, served, sample_products):
    fields, photo = sample_products.both[0]
    body = {
        "products": [
            {
                "designation": fields["designation"],
                "product_id": fields["product_id"],
                "image_base64": base64.b64encode(photo).decode(),
            },
            {"designation": "Piscine tubulaire ronde"},
        ],
        "top_k": 3,
    }
    answer = score.run(json.dumps(body))
    assert answer["model"]["version"] == served.multimodal_version
    predictions = answer["predictions"]
    assert [p["inputs"] for p in predictions] == ["text+image", "text"]
    assert all(len(p["top"]) == 3 for p in predictions)
    reference = Predictor.load(
        f"models:/{served.settings.registered_model_name}/{served.multimodal_version}"
    ).predict(
        [ProductInput(fields["designation"], image=photo), ProductInput("Piscine tubulaire ronde")],
        top_k=3,
    )
    assert [p["prdtypecode"] for p in predictions] == [r.prdtypecode for r in reference]
    assert predictions[0]["product_id"] == fields["product_id"]
    assert all("embeddings" not in p for p in predictions)  # only when asked:
    asked = score.run(json.dumps(body | {"return_embedding": True}))["predictions"]
    modalities = [[e["modality"] for e in p["embeddings"]] for p in asked]
    assert modalities == [["text", "image"], ["text"]]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not JSON"),
        (json.dumps({"products": []}), "invalid request"),
        (json.dumps({"products": [{"designation": ""}]}), "product 0: no title"),
        (
            json.dumps({"products": [{"designation": "x"}, {"image_base64": "%%"}]}),
            "product 1: image_base64 is not valid base64",
        ),
        (
            json.dumps({"products": [{"image_base64": base64.b64encode(b"text").decode()}]}),
            "not an image",
        ),
    ],
)
def test_bad_requests_get_a_reason_not_a_crash(score, body, reason):
    answer = score.run(body)
    assert reason in answer["error"]
