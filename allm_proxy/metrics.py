"""Prometheus metrics of one proxy app, updated in ONE place: where the access log line is written.

    metrics = Metrics()
    metrics.observe(call, operation="generate")     # a finished `Call`, from the server's middleware
    body, content_type = metrics.render()           # what GET /metrics answers

Series (labels in braces): ``allm_requests_total{operation,model,provider,status,source}``,
``allm_request_duration_seconds{operation,provider}`` (histogram),
``allm_upstream_duration_seconds{provider}`` (histogram), ``allm_images_total{provider,model}``,
``allm_tokens_total{provider,model,kind}`` (kind input_text|input_image|output),
``allm_inflight_requests``, ``allm_cassette_events_total{event}`` (hit|miss|recorded),
``allm_faults_total{kind}``, ``allm_cost_usd_total{provider,model}``,
``allm_journal_entries_lost_total{reason}`` (unavailable|backlog: the Redis journal's losses).

Each app has its own `CollectorRegistry` (no module globals). With several
worker processes, prometheus_client's multiprocess mode applies: set
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's own variable, read at its
import) to an empty directory before the workers start, and every worker's
``/metrics`` answers the sum over all of them.

Label values never carry a key: the model label is the model the route
named, and an id no model family knows counts under its own name only for
the first `model_limit` such ids (then ``other``), and never when it looks
like a key.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .call import Call

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
# Image calls take seconds to minutes; replays and errors take milliseconds.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, float("inf"))
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,63}$")
_KEY_LIKE = re.compile(r"^(sk-|AIza|Bearer)|[A-Za-z0-9_-]{32,}", re.IGNORECASE)


class Metrics:
    """The metrics of one app, on its own `CollectorRegistry`."""

    def __init__(self, *, model_limit: int = 50) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model_limit = model_limit
        self._unknown_models: set[str] = set()
        self._lock = threading.Lock()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "allm_requests_total",
            "Requests answered.",
            ["operation", "model", "provider", "status", "source"],
            registry=r,
        )
        self.duration = Histogram(
            "allm_request_duration_seconds",
            "Time to answer a request.",
            ["operation", "provider"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream = Histogram(
            "allm_upstream_duration_seconds",
            "Time the upstream took to answer.",
            ["provider"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.images = Counter("allm_images_total", "Images answered.", ["provider", "model"], registry=r)
        self.tokens = Counter(
            "allm_tokens_total", "Tokens the provider reported.", ["provider", "model", "kind"], registry=r
        )
        self.inflight = Gauge(
            "allm_inflight_requests", "Requests being answered now.", registry=r, multiprocess_mode="livesum"
        )
        self.cassette_events = Counter(
            "allm_cassette_events_total", "Cassette hits, misses and recordings.", ["event"], registry=r
        )
        self.faults = Counter("allm_faults_total", "Faults injected.", ["kind"], registry=r)
        self.journal_lost = Counter(
            "allm_journal_entries_lost_total",
            "Journal entries the shared journal could not keep (Redis did not answer, or too many writes waited).",
            ["reason"],
            registry=r,
        )
        self.cost = Counter(
            "allm_cost_usd_total",
            "What the answers cost (or, replayed, saved), USD.",
            ["provider", "model"],
            registry=r,
        )

    def model_label(self, model: str | None, *, known: bool) -> str:
        """A bounded, key-free label for a client-named model id."""
        if not model:
            return "-"
        if not _SAFE_LABEL.match(model) or _KEY_LIKE.search(model):
            return OTHER
        if known:
            return model
        with self._lock:
            if model in self._unknown_models:
                return model
            if len(self._unknown_models) < self.model_limit:
                self._unknown_models.add(model)
                return model
        return OTHER

    def observe(self, call: Call, *, operation: str | None) -> None:
        """Count one answered request (called once, where its access-log line is written).

        Everything comes from the `Call`: its route, outcome, upstream notes (the cassette
        layer's hit, miss or recorded; the provider's time), fault, images, usage and cost.
        """
        if operation is None:
            return
        route = call.route
        provider = route.provider if route else "-"
        known = route is None or route.requested_model is None or not route.family.permissive
        model = self.model_label(route.requested_model if route else None, known=known)
        child = self._child
        child(self.requests, operation, model, provider, str(call.status or 0), call.source or "proxy").inc()
        child(self.duration, operation, provider).observe(call.ms / 1000)
        waited = call.upstream_seconds
        if waited is not None:
            child(self.upstream, provider).observe(waited)
        for note in call.upstream:
            if note.get("cassette") in ("hit", "miss", "recorded"):
                child(self.cassette_events, note["cassette"]).inc()
        if call.fault is not None:
            child(self.faults, call.fault.kind).inc()
        if call.images:
            child(self.images, provider, model).inc(call.images)
        usage = call.usage
        if usage is not None:
            for kind, count in (
                ("input_text", usage.input_text_tokens),
                ("input_image", usage.input_image_tokens),
                ("output", usage.output_tokens),
            ):
                if count:
                    child(self.tokens, provider, model, kind).inc(count)
        if call.cost_usd:
            child(self.cost, provider, model).inc(call.cost_usd)

    def journal_entry_lost(self, reason: str) -> None:
        """The shared journal could not keep an entry (`RedisJournal.on_lost`)."""
        self._child(self.journal_lost, reason).inc()

    def _child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, remembered: prometheus_client checks the values and takes a lock
        on every call, and a finished request asks for five children or more. As bounded as the
        label values are (see `model_label`); children are never removed, so none goes stale."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def render(self) -> tuple[bytes, str]:
        """The text exposition format: this app's registry, or every worker's in multiprocess mode."""
        if os.environ.get(MULTIPROC_VARIABLE):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
