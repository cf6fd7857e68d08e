"""Prometheus metrics of the API, exposed at ``GET /metrics``.

Defined once per process (the Prometheus client registry is global); labels are route
templates, never raw paths, so a scanner cannot blow up the number of series.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from prodclass.cache_budget import counts

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter(
    "prodclass_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
REQUEST_LATENCY = Histogram(
    "prodclass_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
PREDICTION_LATENCY = Histogram(
    "prodclass_prediction_duration_seconds",
    "Time of one model call (a micro-batch or a batch page)",
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "prodclass_prediction_batch_size",
    "Products per model call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
PREDICTED_CLASS = Counter(
    "prodclass_predicted_class_total", "Products predicted, by top category", ["prdtypecode"]
)
MODEL_INFO = Gauge(
    "prodclass_model_info", "The model serving now (value 1)", ["version", "family", "uri"]
)
MODEL_LOADS = Counter("prodclass_model_loads_total", "Model versions loaded and swapped in")
MODEL_LOAD_FAILURES = Counter(
    "prodclass_model_load_failures_total", "Model versions refused (load or smoke test failed)"
)
QUEUE_DEPTH = Gauge("prodclass_prediction_queue_depth", "Products waiting for a worker")
OVERLOAD_REJECTIONS = Counter(
    "prodclass_overload_rejections_total", "Requests refused with 503 because the queue was full"
)
RATE_LIMITED = Counter("prodclass_rate_limited_total", "Requests refused with 429")
LOGIN_LOCKED = Counter(
    "prodclass_login_locked_total", "Sign-ins refused because of repeated failures"
)
SHARED_STATE_FAILURES = Counter(
    "prodclass_shared_state_failures_total",
    "Calls to Redis that failed (counters then kept in memory, revocations from the database)",
)
LOG_BACKLOG = Gauge(
    "prodclass_prediction_log_backlog", "Prediction records not yet written to the database"
)
LOG_WRITE_FAILURES = Counter(
    "prodclass_prediction_log_write_failures_total", "Failed attempts to write prediction records"
)
LOG_FAILING = Gauge(
    "prodclass_prediction_log_failing", "1 while the prediction log cannot write, else 0"
)
LOG_DEAD_LETTERS = Counter(
    "prodclass_prediction_log_dead_letters_total",
    "Prediction records the database refused, kept in the dead-letter file",
)

# ---- live A/B tests (serving/ab_testing.py): every answer by the arm that gave it -----------
AB_PREDICTIONS = Counter(
    "prodclass_ab_predictions_total",
    "Products answered, by arm (champion, challenger, requested, shadow) and model version",
    ["arm", "version"],
)
AB_LATENCY = Histogram(
    "prodclass_ab_prediction_duration_seconds",
    "Time from queueing a product to its answer, by arm (shadow: the challenger's call)",
    ["arm"],
    buckets=LATENCY_BUCKETS,
)
AB_CONFIDENCE = Histogram(
    "prodclass_ab_confidence",
    "Probability of the answered category, by arm",
    ["arm"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
AB_SHADOW_DROPPED = Counter(
    "prodclass_ab_shadow_dropped_total",
    "Products the challenger did not shadow because its queue was full",
)
AB_SHADOW_DEPTH = Gauge(
    "prodclass_ab_shadow_queue_depth", "Products waiting for the challenger in shadow mode"
)

# ---- from the monitoring journal (refreshed by serving/watcher.py) ---------------------------
DRIFT_DETECTED = Gauge(
    "prodclass_drift_detected", "1 when the latest drift check found drift, else 0"
)
DRIFT_SCORE = Gauge(
    "prodclass_drift_score",
    "Latest drift check: PSI of a feature (KS/chi-square tests) or MMD of embeddings",
    ["feature", "test"],
)
ROLLING_WEIGHTED_F1 = Gauge(
    "prodclass_rolling_weighted_f1", "Weighted F1 of reviewed predictions (last 7 days)"
)
ROLLING_REVIEWED = Gauge(
    "prodclass_rolling_reviewed_predictions", "Reviewed predictions behind the rolling F1"
)


# ---- the on-disk caches (read from cache_budget's process-wide counts at each scrape) --------
CACHE_KINDS = {"feature": "Photo feature", "ocr": "OCR"}


class CacheCollector(Collector):
    """prodclass_{feature,ocr}_cache_{hits,misses,evictions}_total and _bytes: the caches live
    in models/ and data/, which know nothing of Prometheus, so their counts are read here."""

    def collect(self) -> Iterator[Metric]:
        for kind, label in CACHE_KINDS.items():
            now = counts(kind)
            name = f"prodclass_{kind}_cache"
            yield CounterMetricFamily(f"{name}_hits", f"{label} cache lookups found", now.hits)
            yield CounterMetricFamily(
                f"{name}_misses", f"{label} cache lookups computed", now.misses
            )
            yield CounterMetricFamily(
                f"{name}_evictions",
                f"{label} cache entries deleted to stay under the cap",
                now.evictions,
            )
            if now.bytes is not None:
                yield GaugeMetricFamily(
                    f"{name}_bytes", f"{label} cache size as this process last measured it",
                    now.bytes,
                )  # fmt: skip


REGISTRY.register(CacheCollector())
