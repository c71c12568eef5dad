"""Prometheus metrics, one registry per app (no process globals): served at ``GET /metrics``.

Labels are bounded and carry no user content: the route's pattern, the configured model name (empty when the
request never resolved one), the status code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Distinct memory user ids given their own label; more (a client's custom header can say anything) share
# "other". The ledger keeps every id.
MAX_USER_LABELS = 100
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._users: set[str] = set()
        # The token and cost counters' children by their labels: prometheus_client's labels() checks and
        # looks up under a lock (~3 us), up to four times a request; bounded as the labels are.
        self._children: dict[int, dict[tuple[str, ...], Any]] = {}
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
        self.connections = Gauge("memproxy_open_connections", "Inbound connections open", registry=r)
        self.connections_shed = Counter(
            "memproxy_connections_shed",
            "Inbound connections closed at the connection cap: idle (the longest-idle, to make room) or "
            "refused (a new one, every open one running a request)",
            ["how"],
            registry=r,
        )
        self.streams = Gauge("memproxy_in_flight_streams", "Streams being relayed", registry=r)
        self.reloads = Counter("memproxy_config_reloads", "Config reloads", ["outcome"], registry=r)
        # Usage, from the ledger's rows: labels bounded (MAX_USER_LABELS user ids, client families, models).
        self.tokens = Counter(
            "memproxy_tokens", "Tokens used", ["user", "client", "model", "kind"], registry=r
        )
        self.cost = Counter(
            "memproxy_cost_usd",
            "Cost by LiteLLM's price map, in USD",
            ["user", "client", "model"],
            registry=r,
        )
        self.ledger_write_errors = Counter(
            "memproxy_ledger_write_errors", "Failed writes of the usage ledger (retried)", registry=r
        )
        self.ledger_dropped = Counter(
            "memproxy_ledger_dropped_rows", "Ledger rows dropped while writes kept failing", registry=r
        )
        self.fallbacks = Counter(
            "memproxy_fallbacks", "Requests answered by a fallback model group", ["model"], registry=r
        )
        self.cooldowns = Counter(
            "memproxy_deployment_cooldowns",
            "Deployments put in cooldown by LiteLLM's Router",
            ["model"],
            registry=r,
        )

    def count_usage(self, row: Any) -> None:
        """A ledger row's tokens and cost (a ledger.Row; metrics imports nothing of ours)."""
        user = row.user_id if row.user_id in self._users or len(self._users) < MAX_USER_LABELS else "other"
        self._users.add(user)
        for kind, value in (
            ("input", row.input_tokens),
            ("output", row.output_tokens),
            ("cache_read", row.cache_read_tokens),
            ("cache_write", row.cache_write_tokens),
            ("reasoning", row.reasoning_tokens),
        ):
            if value:
                self._usage_child(self.tokens, user, row.client, row.model, kind).inc(value)
        if row.cost_usd:
            self._usage_child(self.cost, user, row.client, row.model).inc(row.cost_usd)

    def _usage_child(self, counter: Counter, *labels: str) -> Any:
        children = self._children.setdefault(id(counter), {})
        child = children.get(labels)
        if child is None:
            child = children[labels] = counter.labels(*labels)
        return child

    def count_cookies(self, count: Callable[[], int]) -> None:
        self.cookies.set_function(lambda: float(count()))
