"""MLflow pyfunc wrapper: any prodclass model folder becomes a standard MLflow model.

The folder travels as an artifact, so the registered model loads with plain
``mlflow.pyfunc.load_model`` (e.g. behind ``mlflow models serve``) and, unwrapped, gives back the
prodclass classifier the API and batch jobs use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

MODEL_DIR_ARTIFACT = "model_dir"


class ProdclassPyfunc(mlflow.pyfunc.PythonModel):
    """Input: columns designation, description, image (file path, may be empty).
    Output: predicted prdtypecode and its probability.

    Predictions go through the API's predictor, so photos are checked and a product with
    nothing to classify is refused (InvalidProductError) here as everywhere else."""

    def load_context(self, context: Any) -> None:
        from prodclass.serving.predictor import Predictor

        folder = Path(context.artifacts[MODEL_DIR_ARTIFACT])
        self.predictor = Predictor.load_folder(folder, str(folder), None, "pyfunc")

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return predict_frame(self.predictor, model_input)


def predict_frame(predictor: Any, raw: pd.DataFrame) -> pd.DataFrame:
    """Best prdtypecode and its probability for each row of raw fields (see ``pyfunc``)."""
    from prodclass.serving.predictor import product_inputs

    answers = predictor.predict(product_inputs(raw), top_k=1)
    return pd.DataFrame(
        {
            "prdtypecode": [a.prdtypecode for a in answers],
            "probability": [a.top[0].probability for a in answers],
        }
    )
