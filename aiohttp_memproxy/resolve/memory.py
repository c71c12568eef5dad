"""Memory routing: which memory user a request belongs to, and the headers a Supermemory model gets for it.

Precedence, as the seed project had it: the custom header's value when present (an invalid value is a 400,
never forwarded); else the first ``header_patterns`` rule, in config order, whose regex *searches* (unanchored
unless the pattern says ``^``, case-insensitive) the named header's value; else ``default_user_id``.
Pure: no aiohttp.web, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from aiohttp_memproxy.config.schema import USER_ID_RE, USER_ID_RULE, RoutingConfig
from aiohttp_memproxy.config.settings import ModelConfig
from aiohttp_memproxy.errors import InvalidRequest

USER_ID_HEADER = "x-sm-user-id"
CONVERSATION_HEADER = "x-sm-conversation-id"
# Claude Code names its session; it is the natural Supermemory conversation when the client sets none.
CLAUDE_SESSION_HEADER = "x-claude-code-session-id"
# Codex CLI's session (it sends `session_id` and `conversation_id` on every Responses request).
CODEX_SESSION_HEADER = "session_id"
# A rule may match on any header; /memory-routing/info must still never show a credential.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "x-litellm-api-key", "cookie", "proxy-authorization"}
)

Headers = Mapping[str, str] | CIMultiDictProxy[str] | CIMultiDict[str]


@dataclass(frozen=True)
class PatternMatch:
    header: str
    value: str
    pattern: str
    user_id: str


@dataclass(frozen=True)
class MemoryDecision:
    user_id: str
    matched_pattern: PatternMatch | None
    custom_header_present: bool
    conversation_id: str | None = None

    @property
    def is_default(self) -> bool:
        return self.matched_pattern is None and not self.custom_header_present

    def info(self) -> dict[str, Any]:
        """The flat shape of ``GET /memory-routing/info``."""
        match = self.matched_pattern
        return {
            "user_id": self.user_id,
            "matched_pattern": None
            if match is None
            else {
                "header": match.header,
                "value": "[redacted]" if match.header in CREDENTIAL_HEADERS else match.value,
                "pattern": match.pattern,
                "user_id": match.user_id,
            },
            "custom_header_present": self.custom_header_present,
            "is_default": self.is_default,
        }


class MemoryRouting:
    def __init__(self, config: RoutingConfig) -> None:
        self.config = config

    def decide(self, headers: Headers) -> MemoryDecision:
        """Raises InvalidRequest when the custom header carries an invalid user id."""
        lookup = headers if isinstance(headers, CIMultiDictProxy | CIMultiDict) else CIMultiDict(headers)
        conversation = self._conversation(lookup)
        custom = lookup.get(self.config.custom_header)
        if custom is not None:
            user_id = custom.strip()
            if not USER_ID_RE.fullmatch(user_id):
                raise InvalidRequest(
                    f"header {self.config.custom_header}: invalid user id, expected {USER_ID_RULE}",
                    param=self.config.custom_header,
                )
            return MemoryDecision(user_id, None, True, conversation)
        for rule in self.config.header_patterns:
            value = lookup.get(rule.header)
            if value is not None and rule.regex.search(value):
                match = PatternMatch(rule.header, value, rule.pattern, rule.user_id)
                return MemoryDecision(rule.user_id, match, False, conversation)
        return MemoryDecision(self.config.default_user_id, None, False, conversation)

    def routing_info(self, headers: Headers) -> dict[str, Any]:
        return self.decide(headers).info()

    @staticmethod
    def _conversation(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str | None:
        for name in (CONVERSATION_HEADER, CLAUDE_SESSION_HEADER, CODEX_SESSION_HEADER):
            value = headers.get(name, "").strip()
            if USER_ID_RE.fullmatch(value):
                return value
        return None


def memory_headers(model: ModelConfig, decision: MemoryDecision) -> dict[str, str]:
    """Headers to add for ``model``: a user id never goes to a provider that is not Supermemory."""
    if not model.supermemory:
        return {}
    headers = {USER_ID_HEADER: decision.user_id}
    if decision.conversation_id:
        headers[CONVERSATION_HEADER] = decision.conversation_id
    return headers
