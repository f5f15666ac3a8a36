"""Prometheus metrics of one proxy app, updated in ONE place: where the access log line is written.

    metrics = Metrics()
    metrics.observe(CallRecord(operation="generate", model="gpt-image-1", provider="openai",
                               status=200, seconds=0.8, facts={"images": 1}))
    body, content_type = metrics.render()           # what GET /metrics answers

Series (labels in braces): ``allm_requests_total{operation,model,provider,status,source}``,
``allm_request_duration_seconds{operation,provider}`` (histogram),
``allm_upstream_duration_seconds{provider}`` (histogram), ``allm_images_total{provider,model}``,
``allm_tokens_total{provider,model,kind}`` (kind input_text|input_image|output),
``allm_inflight_requests``, ``allm_cassette_events_total{event}`` (hit|miss|recorded),
``allm_faults_total{kind}``, ``allm_cost_usd_total{provider,model}``.

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
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .context import current_call
from .types import Usage

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
# Image calls take seconds to minutes; replays and errors take milliseconds.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, float("inf"))
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,63}$")
_KEY_LIKE = re.compile(r"^(sk-|AIza|Bearer)|[A-Za-z0-9_-]{32,}", re.IGNORECASE)


@dataclass
class CallRecord:
    """One answered request, as the access log line sees it.

    `facts` is what the layers below noted (`CallOptions.facts`): ``cassette``
    (hit|miss|recorded), ``upstream_seconds``, ``images``, ``usage`` (a Usage),
    ``cost_usd``, ``fault``.
    """

    operation: str
    model: str
    provider: str
    status: int
    seconds: float
    facts: Mapping[str, Any] = field(default_factory=dict)
    model_known: bool = True

    @property
    def source(self) -> str:
        """Who answered: cassette, fault, fake, upstream, or proxy (the proxy itself, e.g. a 400)."""
        if self.facts.get("fault"):
            return "fault"
        if self.facts.get("cassette") == "hit":
            return "cassette"
        if self.provider == "fake" and self.facts.get("reached_adapter"):
            return "fake"
        if "upstream_seconds" in self.facts:
            return "upstream"
        return "proxy"


class Metrics:
    """The metrics of one app, on its own `CollectorRegistry`."""

    def __init__(self, *, model_limit: int = 50) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model_limit = model_limit
        self._unknown_models: set[str] = set()
        self._lock = threading.Lock()
        r = self.registry
        self.requests = Counter("allm_requests_total", "Requests answered.",
                                ["operation", "model", "provider", "status", "source"], registry=r)
        self.duration = Histogram("allm_request_duration_seconds", "Time to answer a request.",
                                  ["operation", "provider"], buckets=_BUCKETS, registry=r)
        self.upstream = Histogram("allm_upstream_duration_seconds", "Time the upstream took to answer.",
                                  ["provider"], buckets=_BUCKETS, registry=r)
        self.images = Counter("allm_images_total", "Images answered.", ["provider", "model"], registry=r)
        self.tokens = Counter("allm_tokens_total", "Tokens the provider reported.",
                              ["provider", "model", "kind"], registry=r)
        self.inflight = Gauge("allm_inflight_requests", "Requests being answered now.", registry=r,
                              multiprocess_mode="livesum")
        self.cassette_events = Counter("allm_cassette_events_total", "Cassette hits, misses and recordings.",
                                       ["event"], registry=r)
        self.faults = Counter("allm_faults_total", "Faults injected.", ["kind"], registry=r)
        self.cost = Counter("allm_cost_usd_total", "What the answers cost (or, replayed, saved), USD.",
                            ["provider", "model"], registry=r)

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

    def observe(self, record: CallRecord) -> None:
        """Count one answered request (called once, where its access log line is written)."""
        facts = record.facts
        model = self.model_label(record.model, known=record.model_known)
        provider = record.provider
        self.requests.labels(record.operation, model, provider, str(record.status), record.source).inc()
        self.duration.labels(record.operation, provider).observe(record.seconds)
        if "upstream_seconds" in facts:
            self.upstream.labels(provider).observe(float(facts["upstream_seconds"]))
        event = facts.get("cassette")
        if event in ("hit", "miss", "recorded"):
            self.cassette_events.labels(event).inc()
        if facts.get("fault"):
            self.faults.labels(str(facts["fault"])).inc()
        images = int(facts.get("images") or 0)
        if images:
            self.images.labels(provider, model).inc(images)
        usage = facts.get("usage")
        if isinstance(usage, Usage):
            for kind, count in (("input_text", usage.input_text_tokens), ("input_image", usage.input_image_tokens),
                                ("output", usage.output_tokens)):
                if count:
                    self.tokens.labels(provider, model, kind).inc(count)
        cost = facts.get("cost_usd")
        if cost:
            self.cost.labels(provider, model).inc(float(cost))

    def render(self) -> tuple[bytes, str]:
        """The text exposition format: this app's registry, or every worker's in multiprocess mode."""
        if os.environ.get(MULTIPROC_VARIABLE):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class TimedTransport(httpx.AsyncBaseTransport):
    """`inner`, noting in the call's facts how long the upstream took to send its answer's head.

    It sits under the cassette layer, so a replay records no upstream time.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        try:
            return await self._inner.handle_async_request(request)
        finally:
            call = current_call.get()
            if call is not None:
                call.facts["upstream_seconds"] = call.facts.get("upstream_seconds", 0.0) + (
                    time.perf_counter() - started)

    async def aclose(self) -> None:
        await self._inner.aclose()
