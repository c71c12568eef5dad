"""Prometheus metrics, one registry per app (no process globals): served at ``GET /metrics``.

Labels are bounded and carry no user content: the route's pattern, the configured model name (empty when the
request never resolved one), the status code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "memproxy_requests", "Requests answered", ["route", "model", "status"], registry=r
        )
        self.latency = Histogram(
            "memproxy_request_duration_seconds",
            "Time to the full answer",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_byte = Histogram(
            "memproxy_stream_first_byte_seconds",
            "Time to a stream's first byte",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_attempts = Counter("memproxy_upstream_attempts", "Upstream HTTP attempts", registry=r)
        self.upstream_retries = Counter(
            "memproxy_upstream_retries", "Upstream attempts that were retries", ["status"], registry=r
        )
        self.challenges = Counter(
            "memproxy_cloudflare_challenges", "Upstream answers that were Cloudflare challenges", registry=r
        )
        self.cookies = Gauge("memproxy_cookies", "Cookies in the jar", registry=r)
        self.in_flight = Gauge("memproxy_in_flight_requests", "Requests being handled", registry=r)
        self.streams = Gauge("memproxy_in_flight_streams", "Streams being relayed", registry=r)
        self.reloads = Counter("memproxy_config_reloads", "Config reloads", ["outcome"], registry=r)
        self.fallbacks = Counter(
            "memproxy_fallbacks", "Requests answered by a fallback model group", ["model"], registry=r
        )
        self.cooldowns = Counter(
            "memproxy_deployment_cooldowns",
            "Deployments put in cooldown by LiteLLM's Router",
            ["model"],
            registry=r,
        )

    def count_cookies(self, count: Callable[[], int]) -> None:
        self.cookies.set_function(lambda: float(count()))
