"""The MLflow pyfunc model predicts through the API's predictor: photos are checked and a
product with nothing to classify is refused, as on every other path."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from prodclass.data.prepare import load_prepared
from prodclass.models.registry import create
from prodclass.registry.model_registry import log_model
from prodclass.registry.tracking import configure_mlflow
from prodclass.serving.predictor import InvalidProductError
from prodclass.settings import get_settings
from prodclass.training.train import input_example


@pytest.fixture(scope="module")
def logged(six_codes_prepared, sample, tmp_path_factory):
    """A model logged to a private MLflow store (its URI) and the products it learnt."""
    root = tmp_path_factory.mktemp("pyfunc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRODCLASS_STATE_DIR", str(root / "state"))
        mp.setenv("PRODCLASS_DATA_DIR", str(sample))
        mp.delenv("PRODCLASS_MLFLOW_TRACKING_URI", raising=False)
        get_settings.cache_clear()
        products = load_prepared(six_codes_prepared)
        model = create("tfidf-linear", {"calibration_folds": 2})
        model.fit(products)
        folder = model.save(root / "model")
        configure_mlflow(get_settings())
        with mlflow.start_run():
            uri = log_model(model, folder, input_example(products))
        yield uri, products
    get_settings.cache_clear()


@pytest.fixture
def pyfunc_model(logged):
    uri, products = logged
    return mlflow.pyfunc.load_model(uri), products


def test_the_logged_model_pins_what_it_needs(logged):
    uri, _ = logged
    lines = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    pins = dict(line.split("==", 1) for line in lines if "==" in line)
    assert pins["torch"].startswith("2.13.0") and pins["mlflow"] == mlflow.__version__
    assert {"scikit-learn", "pandas", "numpy", "pillow"} <= set(pins)
    assert not {"pytest", "ruff"} & set(pins)  # test and development tools stay out


def frame(designation: str, image: str) -> pd.DataFrame:
    """One product as the pyfunc's signature takes it."""
    return pd.DataFrame({"designation": [designation], "description": [""], "image": [image]})


def test_pyfunc_answers_like_the_predictor(pyfunc_model):
    loaded, products = pyfunc_model
    row = products[products["modality"] == "text_only"].iloc[0]
    answer = loaded.predict(frame(row["text"], ""))
    assert list(answer.columns) == ["prdtypecode", "probability"]
    assert 0 < answer["probability"].iloc[0] <= 1


def test_pyfunc_refuses_what_the_api_refuses(pyfunc_model, tmp_path):
    loaded, _ = pyfunc_model
    with pytest.raises(InvalidProductError, match="no title, no description and no photo"):
        loaded.predict(frame("", ""))
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("not an image")
    with pytest.raises(InvalidProductError, match="photo refused"):
        loaded.predict(frame("Piscine", str(not_a_photo)))
    with pytest.raises(InvalidProductError, match="cannot be read"):
        loaded.predict(frame("Piscine", "/nowhere.jpg"))
