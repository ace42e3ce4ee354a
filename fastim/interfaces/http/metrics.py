"""``/metrics``: this node's metrics in the Prometheus text format."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from fastim.interfaces.http.base import ApiHandler, HttpContext
from fastim.interfaces.metrics import Metrics


class MetricsHandler(ApiHandler):
    """Prometheus text exposition of this node's counters, gauges and histograms."""

    http_method = "get"

    def initialize(self, http: HttpContext, metrics: Metrics) -> None:
        super().initialize(http)
        self.metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.metrics.exposition())
