"""The one settings object of prodclass.

Every host, path and secret comes from here (environment variables prefixed ``PRODCLASS_`` or a
``.env`` file), so the same code runs on a laptop, in Kubernetes, on Azure ML and on Streamlit
Community Cloud. ``.env.example`` documents each variable.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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

    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where the PyTorch families train, evaluate and serve: auto (CUDA when "
        "present, else the CPU), cpu, or cuda (an error when no GPU is usable). On CUDA, "
        "mixed precision and pinned memory are on.",
    )
    ocr_workers: int = Field(
        default=2, ge=1, description="Parallel Tesseract processes reading text on photos."
    )
    feature_cache_max_mb: int = Field(
        default=2048,
        ge=0,
        description="Size cap (MiB) of the photo feature cache under state_dir; the least "
        "recently used entries are evicted past it. 0: no cap (a machine that trains on the "
        "whole catalogue: it reads every photo's activations each epoch).",
    )
    ocr_cache_max_mb: int = Field(
        default=256,
        ge=0,
        description="Size cap (MiB) of the cache of words read on photos under state_dir, "
        "least recently used first; 0: no cap.",
    )
    clip_model: str = Field(
        default="openai/clip-vit-base-patch32",
        description="CLIP weights for `multimodal-clip`: a local folder or a Hugging Face hub id.",
    )
    text_transformer_model: str = Field(
        default="camembert-base",
        description="BERT-class weights for `text-transformer`: a local folder or a hub id.",
    )

    # ---- prediction API -----------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of users, predictions, feedback (unset: SQLite in state_dir).",
    )
    api_host: str = Field(default="127.0.0.1", description="Interface `prodclass serve` binds.")
    api_port: int = Field(default=8000, ge=1, le=65535)
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs access tokens; unset: a random one per process (tokens die "
        "with a restart, and several workers would not share it).",
    )
    jwt_expire_minutes: int = Field(default=60, ge=1)
    jwt_issuer: str = Field(default="prodclass", description="`iss` of tokens; others refused.")
    jwt_audience: str = Field(
        default="prodclass-api", description="`aud` of tokens; tokens for anything else refused."
    )
    environment: Literal["development", "production"] = Field(
        default="development",
        description="production: the API refuses to start without a real JWT secret (32+ "
        "characters) and encryption key, instead of generating throwaway ones.",
    )
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="AES-256-GCM keys for sensitive stored fields (user emails), as "
        "`id:base64key,...`: the first encrypts, all decrypt (rotation: put the new key first, "
        "run `prodclass users reencrypt`, then drop the old); the same in every process that "
        "shares the database. Unset: refused in production and with a database outside "
        "state_dir (others may share it); otherwise a key generated once under "
        "state_dir/secrets.",
    )
    tls_certfile: Path | None = Field(
        default=None, description="PEM certificate: `prodclass serve` then speaks HTTPS."
    )
    tls_keyfile: Path | None = Field(default=None, description="PEM private key of tls_certfile.")
    login_max_failures: int = Field(
        default=5,
        ge=1,
        description="Failed sign-ins for one user name before it is locked for a while "
        "(doubling with each further failure); a client address gets four times as many.",
    )
    login_lockout_seconds: int = Field(
        default=30, ge=1, description="First lockout; doubles per further failure, to 15 min."
    )
    api_predict_workers: int = Field(
        default=2, ge=1, description="Threads that run predictions side by side (about the cores)."
    )
    api_torch_threads: int = Field(
        default=1, ge=1, description="Intra-op CPU threads per prediction worker."
    )
    api_max_batch_size: int = Field(
        default=1,
        ge=1,
        description="Dynamic micro-batching: most single requests grouped into one model call "
        "(1 = off, best on a small CPU; raise it on a GPU or for heavier models).",
    )
    api_max_batch_wait_ms: float = Field(
        default=5.0, ge=0, description="How long a micro-batch waits to fill up."
    )
    api_queue_limit: int = Field(
        default=64,
        ge=1,
        description="Products waiting for a prediction worker; beyond it, 503 + Retry-After.",
    )
    api_max_upload_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest photo (or batch zip) accepted."
    )
    api_max_batch_upload_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description="Largest body of a batch call (JSON with base64 photos, or a zip).",
    )
    api_max_products_per_request: int = Field(
        default=256, ge=1, description="Products in one JSON batch; larger inputs go as a zip."
    )
    api_top_k: int = Field(default=5, ge=1, le=27)
    api_rate_limit_per_minute: int = Field(
        default=3000, ge=1, description="Requests per user per minute (token bucket)."
    )
    api_rate_limit_burst: int = Field(default=200, ge=1)
    redis_url: str | None = Field(
        default=None,
        description="Redis server the API replicas share sign-in throttling, rate limits and "
        "token revocations through (redis://host:6379/0); unset: each process keeps its own "
        "(one machine).",
    )
    redis_prefix: str = Field(
        default="prodclass",
        min_length=1,
        description="Start of every Redis key the API writes (several deployments, one server).",
    )
    photo_store_url: str | None = Field(
        default=None,
        pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?)?$",  # empty: unset
        description="Where the photos clients send are kept, for every API replica and batch "
        "job to read (review queue, feedback export, drift check): s3://bucket/prefix, "
        "credentials from the standard AWS variables; unset: state_dir/uploads (one machine).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible server of the s3:// stores prodclass opens itself (the photo "
        "store): MinIO, Ceph... (http://minio:9000); unset: AWS S3.",
    )
    prediction_log_flush_seconds: float = Field(
        default=1.0, gt=0, description="How often buffered prediction records are written."
    )
    prediction_log_memory_limit: int = Field(
        default=10_000,
        ge=1,
        description="Records kept in memory while the database is unreachable; beyond, they are "
        "appended to a spill file under state_dir and replayed later.",
    )

    scoring_url: str | None = Field(
        default=None,
        pattern=r"^(https?://\S+)?$",  # empty: unset
        description="Scoring URI of an Azure ML online endpoint serving deploy/azureml/score.py "
        "(https://ENDPOINT.REGION.inference.ml.azure.com/score): the API then loads no model "
        "and forwards the products it has checked there; unset: the API loads model_uri.",
    )
    scoring_key: SecretStr | None = Field(
        default=None,
        description="The endpoint's key (or token), sent as `Authorization: Bearer KEY`.",
    )
    scoring_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait for one answer of the scoring endpoint."
    )
    scoring_retries: int = Field(
        default=2,
        ge=0,
        description="Further attempts after a 5xx, a 429 or a lost connection (never after a "
        "4xx or a timeout), waiting scoring_backoff_seconds, then twice as long...",
    )
    scoring_backoff_seconds: float = Field(
        default=0.5,
        ge=0,
        description="Wait before the first retry (or the endpoint's Retry-After).",
    )

    model_poll_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How often the API checks whether its model alias (champion) moved; 0: never.",
    )
    monitoring_refresh_seconds: float = Field(
        default=60.0, ge=0, description="How often the API refreshes drift/quality gauges."
    )
    alert_webhook_token: SecretStr | None = Field(
        default=None,
        description="Shared secret Alertmanager sends as its bearer token to POST "
        "/monitoring/alerts (its webhook's credentials_file holds the same); unset: the route "
        "takes only an admin's access token.",
    )
    ab_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a replica keeps the live A/B test's settings read from the "
        "database before reading them again (every replica follows a change within it).",
    )
    ab_shadow_queue_limit: int = Field(
        default=64,
        ge=1,
        description="Products waiting for the challenger in A/B shadow mode; beyond it they are "
        "dropped and counted (the champion's answer never waits for the challenger).",
    )
    api_version_slots: int = Field(
        default=2,
        ge=1,
        description="Model versions besides the champion kept loaded (the A/B challenger, "
        "versions asked by /predict's model_version); the least recently used is evicted.",
    )
    api_version_load_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a request naming a model version waits for it to load.",
    )
    retrain_job: Literal["retraining", "training"] = Field(
        default="retraining",
        description="The Dagster job `POST /training/runs` asks the Dagster instance to run.",
    )
    pipeline_dir: Path = Field(
        default=Path("."),
        description="Folder holding dvc.yaml where retraining runs asked through the API work, "
        "as the machine running them sees it (relative: to the API's working folder).",
    )
    dagster_home: Path | None = Field(
        default=None,
        description="Folder of the Dagster instance retraining runs are asked of (its "
        "dagster.yaml; every API replica and the Dagster daemon name the same instance); "
        "unset: state_dir/dagster.",
    )
    dagster_ui_host: str = Field(
        default="127.0.0.1", description="Interface `prodclass pipeline ui` (Dagster's UI) binds."
    )
    dagster_ui_port: int = Field(default=3000, ge=1, le=65535)
    api_url: str | None = Field(
        default=None,
        description="Where the web app finds the API (Streamlit secrets may override it); "
        "unset: the API this machine serves, http://API_HOST:API_PORT.",
    )
    ui_host: str = Field(default="127.0.0.1", description="Interface `prodclass ui` binds.")
    ui_port: int = Field(default=8501, ge=1, le=65535)
    ui_username: str | None = Field(
        default=None,
        description="API account the web app signs in with by itself (a private deployment "
        "whose viewers are already authenticated); unset: each user signs in.",
    )
    ui_password: SecretStr | None = Field(default=None, description="Password of ui_username.")

    azure_subscription_id: str | None = Field(
        default=None, description="Azure subscription of the ML workspace (`deploy azureml`)."
    )
    azure_resource_group: str | None = None
    azure_ml_workspace: str | None = None

    @property
    def db_url(self) -> str:
        """The application database, defaulting to SQLite under state_dir."""
        return self.database_url or self._sqlite_in_state("prodclass.db")

    @property
    def api_base_url(self) -> str:
        """The API's address for clients: ``api_url``, else where ``prodclass serve`` listens."""
        scheme = "https" if self.tls_certfile else "http"
        return self.api_url or f"{scheme}://{self.api_host}:{self.api_port}"

    @property
    def dagster_folder(self) -> Path:
        """The Dagster instance's folder: ``dagster_home``, else under state_dir."""
        return (self.dagster_home or self.state_dir / "dagster").resolve()

    @property
    def upload_dir(self) -> Path:
        """The photo store's folder when ``photo_store_url`` is unset (photo_store.py)."""
        return self.state_dir / "uploads"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI, defaulting to an embedded SQLite store."""
        return self.mlflow_tracking_uri or self._sqlite_in_state("mlflow.db")

    def _sqlite_in_state(self, name: str) -> str:
        return f"sqlite:///{(self.state_dir / name).resolve()}"

    @property
    def artifact_root(self) -> Path:
        """Artifact folder used when the tracking store is the embedded one."""
        return (self.state_dir / "mlartifacts").resolve()


@lru_cache
def get_settings() -> Settings:
    """Settings read once per process (tests clear the cache after changing the environment)."""
    return Settings()
