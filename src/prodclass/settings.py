"""The one settings object of prodclass.

Every host, path and secret comes from here (environment variables prefixed ``PRODCLASS_`` or a
``.env`` file), so the same code runs on a laptop, in Kubernetes, on Azure ML and on Streamlit
Community Cloud. ``.env.example`` documents each variable.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration; defaults give the embedded single-machine setup."""

    model_config = SettingsConfigDict(
        env_prefix="PRODCLASS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Field(
        default=Path("../shared/data/rakuten_sample"),
        description="Folder in the challenge layout (X_train_update.csv, images/image_train/...).",
    )
    dataset_url: str = Field(
        default="https://huggingface.co/datasets/ndiguesene/ml-datasets-image-rakuten-ecommerce/resolve/main/",
        description="Base URL that `prodclass data download` fetches the challenge files from.",
    )
    state_dir: Path = Field(
        default=Path("state"),
        description="Where embedded services keep their state (MLflow store, caches, DVC remote).",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking server or store; unset means SQLite under state_dir.",
    )
    mlflow_experiment: str = "prodclass"
    registered_model_name: str = "prodclass"
    model_uri: str = Field(
        default="models:/prodclass@champion",
        description="Model the API, batch jobs and UI predict with.",
    )
    params_file: Path = Path("params.yaml")
    seed: int = 42
    log_level: str = "INFO"
    image_check_workers: int = Field(
        default=2, ge=1, description="Threads used to decode-check images during validation."
    )

    ocr_workers: int = Field(
        default=2, ge=1, description="Parallel Tesseract processes reading text on photos."
    )
    clip_model: str = Field(
        default="openai/clip-vit-base-patch32",
        description="CLIP weights for `multimodal-clip`: a local folder or a Hugging Face hub id.",
    )
    text_transformer_model: str = Field(
        default="camembert-base",
        description="BERT-class weights for `text-transformer`: a local folder or a hub id.",
    )

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI, defaulting to an embedded SQLite store."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        """Artifact folder used when the tracking store is the embedded one."""
        return (self.state_dir / "mlartifacts").resolve()


@lru_cache
def get_settings() -> Settings:
    """Settings read once per process (tests clear the cache after changing the environment)."""
    return Settings()
