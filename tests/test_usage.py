"""openai_chat.ChatUsageTap: the usage-only chunk of an OpenAI chat stream taken out of its bytes and read,
every other byte passed on unchanged and in order, however the stream is split; the OpenAI SDK's own SSE
decoder (which LiteLLM reads OpenAI streams with) then sees the same events but that one.
anthropic.StreamUsage: a Messages stream's usage read from its bytes, however they are split."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st
from openai._streaming import SSEDecoder

from aiohttp_memproxy.dialects import anthropic, openai_chat
from aiohttp_memproxy.usage.tokens import Tokens


def event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def content(text: str, finish: str | None = None) -> bytes:
    delta = {"content": text} if text else {}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return event({"id": "c", "choices": [choice], "usage": None})


USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 30,
    "prompt_tokens_details": {"cached_tokens": 1000},
    "completion_tokens_details": {"reasoning_tokens": 12},
}
USAGE_EVENT = event({"id": "c", "choices": [], "usage": USAGE})
# Text that looks like the usage chunk's parts, inside a content chunk: never taken.
LOOKALIKE = content('{"choices": [], "usage": {"prompt_tokens": 9}} and [] too')
STREAM = [content("Hello"), LOOKALIKE, content(" world", "stop"), USAGE_EVENT, b"data: [DONE]\n\n"]
WITHOUT_USAGE = b"".join(STREAM).replace(USAGE_EVENT, b"")


def tapped(pieces: list[bytes]) -> tuple[bytes, openai_chat.ChatUsageTap]:
    tap = openai_chat.ChatUsageTap()
    passed = b"".join(tap.feed(piece) for piece in pieces) + tap.end()
    return passed, tap


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


def test_the_usage_chunk_is_taken_out_and_read() -> None:
    passed, tap = tapped(STREAM)
    assert passed == WITHOUT_USAGE
    assert tap.tokens == Tokens(input=1200, output=30, cache_read=1000, reasoning=12)


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_split_passes_the_same_bytes(cuts: list[int]) -> None:
    passed, tap = tapped(split(b"".join(STREAM), cuts))
    assert passed == WITHOUT_USAGE
    assert tap.tokens.input == 1200


def test_a_stream_without_a_usage_chunk_passes_whole() -> None:
    data = b"".join([content("Hello"), LOOKALIKE, content("", "stop"), b"data: [DONE]\n\n"])
    passed, tap = tapped([data])
    assert passed == data
    assert not tap.tokens.known


def test_a_long_line_is_never_lost() -> None:
    """A chunk far longer than any buffer (a whole file as one chunk), fed a few bytes at a time."""
    data = content("x" * 300_000) + USAGE_EVENT
    pieces = [data[start : start + 4096] for start in range(0, len(data), 4096)]
    passed, tap = tapped(pieces)
    assert passed == content("x" * 300_000)
    assert tap.tokens.output == 30


def test_crlf_lines_and_an_unfinished_last_line() -> None:
    data = b"".join(STREAM).replace(b"\n", b"\r\n") + b"data: {partial"
    passed, tap = tapped(split(data, [7, 300, 301, 599]))
    assert passed == WITHOUT_USAGE.replace(b"\n", b"\r\n") + b"data: {partial"
    assert tap.tokens.output == 30


def test_a_usage_chunk_as_the_unfinished_last_line_is_taken_too() -> None:
    passed, tap = tapped([content("Hi"), USAGE_EVENT.rstrip(b"\n")])
    assert passed == content("Hi")
    assert tap.tokens.input == 1200


def test_a_chunk_with_choices_and_usage_is_left_to_litellm() -> None:
    """Some OpenAI-compatible servers put the usage on the last content chunk: that one is an answer's
    chunk, and LiteLLM reads its usage (llm.chunks records it from there)."""
    choice = {"index": 0, "delta": {}, "finish_reason": "stop"}
    last = event({"id": "c", "choices": [choice], "usage": USAGE})
    passed, tap = tapped([last])
    assert passed == last
    assert not tap.tokens.known


def decoded(data: bytes) -> list[tuple[str | None, str, str | None]]:
    return [(sse.event, sse.data, sse.id) for sse in SSEDecoder().iter_bytes(iter([data]))]


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=8), st.sampled_from([b"\n", b"\r\n"]))
def test_the_sdk_decodes_the_same_events_but_the_usage_chunk(cuts: list[int], newline: bytes) -> None:
    """An upstream that numbers its events (``id:``, after which the SDK's decoder turns any blank line
    into an event) and ends its lines in CRLF, split anywhere (between a CR and its LF too)."""
    events = [b"id: %d\n" % number + event_bytes for number, event_bytes in enumerate(STREAM, start=1)]
    data = b"".join(events).replace(b"\n", newline)
    passed, tap = tapped(split(data, cuts))
    expected = [item for item in decoded(data) if '"usage": {' not in item[1]]
    assert decoded(passed) == expected
    assert len(expected) == len(STREAM) - 1
    assert tap.tokens.output == 30


def test_bare_cr_lines_keep_their_bytes() -> None:
    """A CR that ends a line inside a read is that line's whole end: an LF at the start of the next read
    belongs to the line after it."""
    data = b"data: a\rdata: b" + b"\n" + USAGE_EVENT.replace(b"\n", b"\r") + b"data: [DONE]\r\r"
    passed, tap = tapped([data[:15], data[15:16], data[16:]])
    assert passed == b"data: a\rdata: b\n" + b"data: [DONE]\r\r"
    assert tap.tokens.output == 30


def anthropic_event(kind: str, payload: dict[str, object]) -> bytes:
    return f"event: {kind}\ndata: ".encode() + json.dumps({"type": kind, **payload}).encode() + b"\n\n"


START_USAGE = {"input_tokens": 20, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 5}
MESSAGE_STREAM = b"".join(
    [
        anthropic_event(
            "message_start", {"message": {"id": "m", "usage": {**START_USAGE, "output_tokens": 1}}}
        ),
        anthropic_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        # The answer's text names the usage events and carries usage-like JSON: never read as usage.
        anthropic_event(
            "content_block_delta",
            {
                "index": 0,
                "delta": {
                    "type": "text_delta",
                    "text": '"message_delta" {"type": "message_delta", "usage": {"output_tokens": 999}}',
                },
            },
        ),
        anthropic_event("content_block_stop", {"index": 0}),
        anthropic_event(
            "message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}
        ),
        anthropic_event("message_stop", {}),
    ]
)
MESSAGE_TOKENS = Tokens(input=1025, output=42, cache_read=1000, cache_write=5)


def read_usage(pieces: list[bytes]) -> Tokens:
    reader = anthropic.StreamUsage()
    for piece in pieces:
        reader.feed(piece)
    return reader.read()


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12), st.sampled_from([b"\n", b"\r\n"]))
def test_a_messages_streams_usage_is_read_however_it_is_split(cuts: list[int], newline: bytes) -> None:
    assert read_usage(split(MESSAGE_STREAM.replace(b"\n", newline), cuts)) == MESSAGE_TOKENS


def test_a_messages_stream_read_byte_by_byte() -> None:
    assert read_usage([MESSAGE_STREAM[i : i + 1] for i in range(len(MESSAGE_STREAM))]) == MESSAGE_TOKENS


def test_a_long_line_before_the_usage_is_passed_over() -> None:
    """A text delta longer than the kept line (a whole file), fed a few bytes at a time: what is kept stays
    bounded, and the usage after it is still read."""
    long_text = anthropic_event(
        "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "x" * 300_000}}
    )
    data = MESSAGE_STREAM.replace(b"event: content_block_stop", long_text + b"event: content_block_stop")
    reader = anthropic.StreamUsage()
    for start in range(0, len(data), 4096):
        reader.feed(data[start : start + 4096])
        assert len(reader._partial) <= anthropic.StreamUsage.MAX_LINE + 4096
    assert reader.read() == MESSAGE_TOKENS
