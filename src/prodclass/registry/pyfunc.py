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
    Output: predicted prdtypecode and its probability."""

    def load_context(self, context: Any) -> None:
        from prodclass.models.registry import load_model_dir

        self.classifier = load_model_dir(Path(context.artifacts[MODEL_DIR_ARTIFACT]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        from prodclass.data.products import products_from_fields

        frame = products_from_fields(model_input)
        probabilities = self.classifier.predict_proba(frame)
        best = probabilities.argmax(axis=1)
        return pd.DataFrame(
            {
                "prdtypecode": self.classifier.classes_[best],
                "probability": probabilities.max(axis=1),
            }
        )
