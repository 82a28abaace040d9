"""Prometheus metrics of the service (names are a team contract: alerts use them).

Each app gets its own `CollectorRegistry` (tests build many apps in one process); `/metrics`
exports it. Other areas add their metrics as attributes of `ServiceMetrics`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
MODEL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
VARIANTS = ("champion", "challenger")
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class ServiceMetrics:
    """Every metric of one app, registered on `self.registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "rakuten_http_requests_total",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "rakuten_http_request_duration_seconds",
            "HTTP request duration by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prediction_duration = Histogram(
            "rakuten_prediction_duration_seconds",
            "Model time of the call that predicted an item, by variant.",
            ["variant"],
            buckets=MODEL_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "rakuten_predictions_total",
            "Predictions by variant and predicted code.",
            ["variant", "prdtypecode"],
            registry=r,
        )
        self.confidence = Histogram(
            "rakuten_prediction_confidence",
            "Top-1 probability of predictions, by variant.",
            ["variant"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.with_image = Counter(
            "rakuten_predictions_with_image_total",
            "Predictions that used an image, by variant.",
            ["variant"],
            registry=r,
        )
        self.needs_review = Counter(
            "rakuten_predictions_needs_review_total",
            "Predictions under the review threshold, by variant.",
            ["variant"],
            registry=r,
        )
        self.feedback = Counter(
            "rakuten_feedback_total",
            "Feedback received, by variant of the prediction and whether it was correct.",
            ["variant", "correct"],
            registry=r,
        )
        self.online_accuracy = Gauge(
            "rakuten_online_accuracy",
            "Accuracy over the latest feedback (rolling window), by variant.",
            ["variant"],
            registry=r,
        )
        self.db_up = Gauge(
            "rakuten_db_up",
            "Whether the service database answered the last check (1) or not (0).",
            registry=r,
        )
        self.model_info = Gauge(
            "rakuten_model_info",
            "The model in service (value 1), by variant.",
            ["variant", "name", "version", "alias", "run_id"],
            registry=r,
        )
        self.model_reloads = Counter(
            "rakuten_model_reloads_total",
            "Model reloads by result (success, failure).",
            ["result"],
            registry=r,
        )
        self.model_loaded_timestamp = Gauge(
            "rakuten_model_loaded_timestamp_seconds",
            "When the model in service was loaded (Unix time), by variant.",
            ["variant"],
            registry=r,
        )
        # Series that exist from the start read 0 rather than "no data" in alerts.
        for result in ("success", "failure"):
            self.model_reloads.labels(result=result)
        for variant in VARIANTS:
            self.with_image.labels(variant)
            self.needs_review.labels(variant)
            for correct in ("true", "false"):
                self.feedback.labels(variant, correct)
        # Security
        self.rate_limited = Counter(
            "rakuten_rate_limited_total",
            "Requests refused by a rate limit (429), by route template.",
            ["route"],
            registry=r,
        )

    def export(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
