"""The client family of a User-Agent: a bounded label for the ledger and /metrics."""

from __future__ import annotations

import functools
import re

# The first rule that matches wins.
CLIENT_FAMILIES = (
    ("claude-cli", re.compile(r"^(claude-cli|Claude Code)", re.IGNORECASE)),
    ("PyCharm", re.compile(r"^OpenAIClientImpl/Java|JetBrains|PyCharm|IntelliJ", re.IGNORECASE)),
    ("Codex", re.compile(r"^codex[_-]", re.IGNORECASE)),
    ("gemini-cli", re.compile(r"^GeminiCLI/", re.IGNORECASE)),
    ("google-genai-sdk", re.compile(r"google-genai-sdk/", re.IGNORECASE)),
    ("openai-sdk", re.compile(r"^(OpenAI/|AsyncOpenAI/)", re.IGNORECASE)),
    ("anthropic-sdk", re.compile(r"^(Anthropic/|AsyncAnthropic/)", re.IGNORECASE)),
)


# A gateway sees a handful of User-Agents: each one's family is remembered, not searched for again.
@functools.lru_cache(maxsize=256)
def client_family(user_agent: str | None) -> str:
    if not user_agent:
        return "other"
    return next((name for name, pattern in CLIENT_FAMILIES if pattern.search(user_agent)), "other")
