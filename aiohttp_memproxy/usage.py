"""What a model request used: its tokens, read from the answer in each dialect, and the client that sent it.

Pure: no I/O, no LiteLLM. The answer's usage is read from what the gateway relays anyway (a JSON body, the
stream's own usage events), never from a prompt or an answer's text. Cost is LiteLLM's (``llm.cost``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# The client family, from the User-Agent: the first rule that matches wins. Bounded, so a label may carry it.
CLIENT_FAMILIES = (
    ("claude-cli", re.compile(r"^(claude-cli|Claude Code)", re.IGNORECASE)),
    ("PyCharm", re.compile(r"^OpenAIClientImpl/Java|JetBrains|PyCharm|IntelliJ", re.IGNORECASE)),
    ("Codex", re.compile(r"^codex[_-]", re.IGNORECASE)),
    ("openai-sdk", re.compile(r"^(OpenAI/|AsyncOpenAI/)", re.IGNORECASE)),
    ("anthropic-sdk", re.compile(r"^(Anthropic/|AsyncAnthropic/)", re.IGNORECASE)),
)


# A gateway sees a handful of User-Agents: each one's family is remembered (bounded), not searched for again.
MAX_KNOWN_AGENTS = 256
_families: dict[str, str] = {}


def client_family(user_agent: str | None) -> str:
    if not user_agent:
        return "other"
    family = _families.get(user_agent)
    if family is None:
        family = next((name for name, pattern in CLIENT_FAMILIES if pattern.search(user_agent)), "other")
        if len(_families) < MAX_KNOWN_AGENTS:
            _families[user_agent] = family
    return family


@dataclass
class Tokens:
    """A request's tokens; None where the answer did not say."""

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None

    def merge(self, other: Tokens) -> None:
        """What ``other`` says, over what this says (a stream's later usage is the fuller one)."""
        for name in TOKEN_FIELDS:
            value = getattr(other, name)
            if value is not None:
                setattr(self, name, value)

    @property
    def known(self) -> bool:
        return self.input is not None or self.output is not None


TOKEN_FIELDS = tuple(item.name for item in fields(Tokens))


def _int(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None  # not a bool, not an int's subclass


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if type(mapping) is not dict and not isinstance(mapping, Mapping):  # JSON's dict first: the fast test
            return None
        mapping = mapping.get(key)
    return mapping


def openai_chat(usage: Any) -> Tokens:
    """Chat completions' ``usage`` (LiteLLM's, which adds Anthropic's cache fields where it has them)."""
    if not isinstance(usage, Mapping):
        return Tokens()
    cached = _int(_get(usage, "prompt_tokens_details", "cached_tokens"))
    return Tokens(
        input=_int(usage.get("prompt_tokens")),
        output=_int(usage.get("completion_tokens")),
        cache_read=_int(usage.get("cache_read_input_tokens")) or cached,
        cache_write=_int(usage.get("cache_creation_input_tokens")),
        reasoning=_int(_get(usage, "completion_tokens_details", "reasoning_tokens")),
    )


def anthropic(usage: Any) -> Tokens:
    """The Messages API's ``usage`` (of a message, or of ``message_start``/``message_delta``). Its
    ``input_tokens`` leaves the cached ones out; here, as in OpenAI's usage (and as LiteLLM's cost
    calculation expects), input counts them, cache read and write being parts of it."""
    if not isinstance(usage, Mapping):
        return Tokens()
    uncached = _int(usage.get("input_tokens"))
    cache_read = _int(usage.get("cache_read_input_tokens"))
    cache_write = _int(usage.get("cache_creation_input_tokens"))
    return Tokens(
        input=None if uncached is None else uncached + (cache_read or 0) + (cache_write or 0),
        output=_int(usage.get("output_tokens")),
        cache_read=cache_read,
        cache_write=cache_write,
    )


def responses(usage: Any) -> Tokens:
    """The Responses API's ``usage``."""
    if not isinstance(usage, Mapping):
        return Tokens()
    return Tokens(
        input=_int(usage.get("input_tokens")),
        output=_int(usage.get("output_tokens")),
        cache_read=_int(_get(usage, "input_tokens_details", "cached_tokens")),
        reasoning=_int(_get(usage, "output_tokens_details", "reasoning_tokens")),
    )


class AnthropicStreamUsage:
    """Reads the usage of an Anthropic SSE stream while its bytes are relayed unchanged: ``message_start``
    carries the input (and cache) tokens, each ``message_delta`` the output so far. Frames may be split
    anywhere; only the end of the last line is kept, bounded.

    Only the data lines of those two events are looked at, found by their quoted type (a string inside an
    answer's text has its quotes escaped, so it never matches): a stream's other lines, its text, are not
    read one by one. They are kept as they are (a few, bounded) and read when ``read`` is called: the
    ledger calls it when it makes the row, in its batch, not on the stream's path.
    """

    MAX_LINE = 64 * 1024  # a usage event's data line is small; anything longer is not one
    MAX_KEPT = 16  # usage lines kept unread; more (a stream of many message_delta) are read as they come
    MARKERS = (b'"message_start"', b'"message_delta"')

    def __init__(self) -> None:
        self._tokens = Tokens()
        self._partial = b""
        self._kept: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk if self._partial else chunk
        end = data.rfind(b"\n") + 1  # the complete lines: data[:end]
        self._partial = data[end:] if len(data) - end <= self.MAX_LINE else b""
        for marker in self.MARKERS:
            at = data.find(marker, 0, end)
            while at != -1:
                start = data.rfind(b"\n", 0, at) + 1
                stop = data.find(b"\n", at, end)  # found: data[end - 1] is a line break
                line = data[start:stop].rstrip(b"\r")
                if line.startswith(b"data:"):
                    self._kept.append(line[5:])
                at = data.find(marker, stop, end)
        if len(self._kept) > self.MAX_KEPT:
            self.read()

    def read(self) -> Tokens:
        """The usage so far: the kept lines read, in the order they came (in one read, a message_start's
        before a message_delta's, as a stream sends them)."""
        kept, self._kept = self._kept, []
        for payload in kept:
            self._read(payload)
        return self._tokens

    def _read(self, payload: bytes) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "message_start":
            self._tokens.merge(anthropic(_get(event, "message", "usage")))
        elif kind == "message_delta":
            self._tokens.merge(anthropic(event.get("usage")))


class ChatUsageTap:
    """Takes the usage-only chunk out of an OpenAI chat stream's bytes, and reads it (``tokens``).

    The gateway asks an OpenAI-compatible upstream for a stream's usage when the client did not (the ledger
    needs it). The answer is one more event, ``"choices": []`` with ``usage``, which the OpenAI SDK and
    LiteLLM would parse and model like any other chunk only for the gateway to drop it: the ledger's one
    cost on a chat stream that ``make bench`` could see. Taken out here, LiteLLM sees the stream a gateway
    without a ledger sees. (Verified with LiteLLM 1.106.2: for a chat stream with no usage chunk, whose
    caller passed no ``stream_options``, its wrapper sets zero usage on the finish chunk and
    ``stream_chunk_builder`` reports that; it does not count the prompt with a tokenizer there.)

    The whole event goes: its data line, and what follows it up to and including the blank line that ends
    it (the OpenAI SDK's SSE decoder dispatches an empty event for a blank line once any ``id:`` was seen).
    Every other byte passes unchanged and in order, each line as soon as its end arrives; the SDK's decoder
    cannot use a line before that anyway, so nothing is held longer than it would be.
    """

    def __init__(self) -> None:
        self.tokens = Tokens()
        self._partial: list[bytes] = []  # a line whose end has not arrived
        self._taking = False  # a usage chunk's data line was taken out: the rest of its event goes too
        self._cr = False  # the last line ended in CR at the end of a read: its LF may come first in the next
        self._dropped = False  # the last line was taken out (and so is that LF)

    def feed(self, chunk: bytes) -> bytes:
        """What of ``chunk`` (and of the line it finishes) goes on to LiteLLM."""
        lead = b""
        if chunk and self._cr:
            self._cr = False
            if chunk[:1] == b"\n":  # a CRLF split between two reads: the line's own end
                lead = b"" if self._dropped else b"\n"
                chunk = chunk[1:]
        if not chunk:
            return lead
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1  # in the new bytes only: linear in a long line
        if end == 0:
            self._partial.append(chunk)
            return lead
        lines = b"".join((*self._partial, chunk[:end])) if self._partial else chunk[:end]
        self._partial = [chunk[end:]] if end < len(chunk) else []
        self._cr = not self._partial and lines.endswith(b"\r")  # the read's very last byte: an LF may follow
        head = b""
        if not self._taking:  # the lines before the first that could be a usage chunk pass as they are
            at = lines.find(b"[]")
            if at == -1:  # no usage chunk here: the usual case
                self._dropped = False
                return lead + lines
            start = max(lines.rfind(b"\n", 0, at), lines.rfind(b"\r", 0, at)) + 1
            head, lines = lines[:start], lines[start:]
        return (
            lead + head + b"".join(line for line in lines.splitlines(keepends=True) if not self._drops(line))
        )

    def end(self) -> bytes:
        """The last line, if the body ended without a line break."""
        rest = b"".join(self._partial)
        self._partial = []
        return b"" if not rest or self._drops(rest) else rest

    def _drops(self, line: bytes) -> bool:
        """Whether ``line`` goes: a usage chunk's data line, or the rest of its event."""
        if self._taking and not line.startswith(b"data:"):
            self._taking = bool(line.strip(b"\r\n"))  # its other fields go, and the blank line that ends it
            self._dropped = True
        else:
            self._dropped = self._taking = self._read(line)
        return self._dropped

    def _read(self, line: bytes) -> bool:
        """Whether ``line`` is a usage-only chunk's data line; its usage is read if so."""
        if not line.startswith(b"data:") or b'"usage"' not in line or b"[]" not in line:
            return False
        try:
            event = json.loads(line[5:])
        except ValueError:
            return False
        if not isinstance(event, dict) or event.get("choices") != []:
            return False
        if not isinstance(event.get("usage"), dict):
            return False
        self.tokens.merge(openai_chat(event["usage"]))
        return True


@dataclass
class Record:
    """What a model request's ledger row needs beyond the canonical log line's fields, filled in as the
    request goes: the model LiteLLM priced it as, its tokens, when its first byte went out."""

    litellm_model: str = ""
    provider: str = ""
    tokens: Tokens = field(default_factory=Tokens)
    litellm_cost: float | None = None  # LiteLLM's own price of a whole answer, where it gave one
    first_byte_s: float | None = None  # seconds after the request arrived
    # The answer's usage, read when the row is made (in the ledger's batch, off the request's path): merged
    # over ``tokens`` by ``settled``.
    later: Callable[[], Tokens] | None = None

    def settled(self) -> Tokens:
        if self.later is not None:
            self.tokens.merge(self.later())
            self.later = None
        return self.tokens


def read_later(parse: Callable[[Any], Tokens], found: Any) -> Callable[[], Tokens]:
    """``parse`` of an answer's usage, when asked: JSON, or LiteLLM's object dumped as JSON (faster than
    reading its fields one by one: pydantic looks some of them up the slow way)."""

    def read() -> Tokens:
        dump = getattr(found, "model_dump", None)
        return parse(dump() if callable(dump) else found)

    return read
