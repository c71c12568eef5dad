"""The bodies a provider's API answers with, beyond OpenAI chat and Anthropic Messages: the OpenAI Responses
API, Gemini, Ollama, Bedrock Converse (AWS event stream) and Cohere v2. Pure functions of the reply text, so
the fake upstream stays a dispatcher; each shape is the minimum LiteLLM 1.106.2 parses, plus what the real
API sends that LiteLLM reads (usage, finish reasons)."""

from __future__ import annotations

import json
import struct
import time
import zlib
from typing import Any

USAGE_IN, USAGE_OUT = 5, 3


# The OpenAI Responses API (POST /v1/responses): JSON, or SSE events with `event:` lines. With `call` (a tool
# name and its arguments), the answer ends with a function_call item after the text: a model calling a tool.
def function_call_item(call: tuple[str, str], status: str = "completed") -> dict[str, Any]:
    name, arguments = call
    return {
        "type": "function_call",
        "id": "fc_fake",
        "call_id": "call_fake",
        "name": name,
        "arguments": arguments if status == "completed" else "",
        "status": status,
    }


def response_object(
    model: str, text: str, status: str = "completed", call: tuple[str, str] | None = None
) -> dict[str, Any]:
    done = status == "completed"
    output: list[dict[str, Any]] = []
    if done:
        output.append(
            {
                "type": "message",
                "id": "msg_fake",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
        if call:
            output.append(function_call_item(call))
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "usage": {
            "input_tokens": USAGE_IN,
            "output_tokens": USAGE_OUT,
            "total_tokens": USAGE_IN + USAGE_OUT,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        if done
        else None,
    }


def response_events(model: str, pieces: list[str], call: tuple[str, str] | None = None) -> list[bytes]:
    text = "".join(pieces)
    message = {
        "type": "message",
        "id": "msg_fake",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
    final = response_object(model, text, call=call)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response_object(model, "", "in_progress")},
        {"type": "response.output_item.added", "output_index": 0, "item": message},
        {"type": "response.content_part.added", **where, "part": part},
        *({"type": "response.output_text.delta", **where, "delta": piece} for piece in pieces),
        {"type": "response.output_text.done", **where, "text": text},
        {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": final["output"][0]},
    ]
    if call:
        arguments = call[1]
        fc = {"item_id": "fc_fake", "output_index": 1}
        events += [
            {
                "type": "response.output_item.added",
                "output_index": 1,
                "item": function_call_item(call, "in_progress"),
            },
            {"type": "response.function_call_arguments.delta", **fc, "delta": arguments[:10]},
            {"type": "response.function_call_arguments.delta", **fc, "delta": arguments[10:]},
            {"type": "response.function_call_arguments.done", **fc, "arguments": arguments},
            {"type": "response.output_item.done", "output_index": 1, "item": function_call_item(call)},
        ]
    events.append({"type": "response.completed", "response": final})
    return [
        f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': number})}\n\n".encode()
        for number, event in enumerate(events)
    ]


# Gemini (generateContent, streamGenerateContent?alt=sse).
def gemini_chunk(
    text: str, finish: str | None = None, usage: bool = True, call: tuple[str, Any] | None = None
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": text}]
    if call is not None:
        parts.append({"functionCall": {"name": call[0], "args": call[1]}})
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-fake"}
    if usage:
        chunk["usageMetadata"] = {
            "promptTokenCount": USAGE_IN,
            "candidatesTokenCount": USAGE_OUT,
            "totalTokenCount": USAGE_IN + USAGE_OUT,
        }
    return chunk


def gemini_events(pieces: list[str], call: tuple[str, Any] | None = None) -> list[bytes]:
    chunks = [gemini_chunk(piece, usage=False) for piece in pieces[:-1]]
    chunks.append(gemini_chunk(pieces[-1], "STOP", call=call))
    return [b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks]


# Ollama (/api/chat): JSON, or NDJSON with `done` on the last line.
def ollama_done(model: str, text: str = "") -> dict[str, Any]:
    return {
        "model": model,
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": USAGE_IN,
        "eval_count": USAGE_OUT,
    }


def ollama_lines(model: str, pieces: list[str]) -> list[bytes]:
    lines = [
        {
            "model": model,
            "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": piece},
            "done": False,
        }
        for piece in pieces
    ]
    lines.append(ollama_done(model))
    return [json.dumps(line).encode() + b"\n" for line in lines]


# Bedrock Converse (/model/{id}/converse, /converse-stream): the stream is AWS's binary event stream.
def _aws_header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value
    )


def aws_event(event_type: str, payload: dict[str, Any]) -> bytes:
    """One frame: prelude (total and headers length, CRC32), headers, JSON payload, message CRC32."""
    headers = (
        _aws_header(":event-type", event_type)
        + _aws_header(":content-type", "application/json")
        + _aws_header(":message-type", "event")
    )
    body = json.dumps(payload, separators=(",", ":")).encode()
    prelude = struct.pack(">II", 12 + len(headers) + len(body) + 4, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


def converse_body(text: str) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": USAGE_IN, "outputTokens": USAGE_OUT, "totalTokens": USAGE_IN + USAGE_OUT},
        "metrics": {"latencyMs": 1},
    }


def converse_frames(pieces: list[str]) -> list[bytes]:
    usage = {"inputTokens": USAGE_IN, "outputTokens": USAGE_OUT, "totalTokens": USAGE_IN + USAGE_OUT}
    return [
        aws_event("messageStart", {"role": "assistant"}),
        *(aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in pieces),
        aws_event("contentBlockStop", {"contentBlockIndex": 0}),
        aws_event("messageStop", {"stopReason": "end_turn"}),
        # LiteLLM reads usage only from a payload that also has metrics, as Bedrock sends it.
        aws_event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}),
    ]


# Cohere v2 (/v2/chat). LiteLLM 1.106.2 reads its stream line by line as JSON (no SSE framing).
def cohere_body(text: str) -> dict[str, Any]:
    return {
        "id": "cohere_fake",
        "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "usage": {"tokens": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT}},
    }


def cohere_lines(pieces: list[str]) -> list[bytes]:
    end = {
        "finish_reason": "COMPLETE",
        "usage": {"tokens": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT}},
    }
    events: list[dict[str, Any]] = [
        {"type": "message-start", "id": "cohere_fake", "delta": {"message": {"role": "assistant"}}},
        *(
            {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": piece}}}}
            for piece in pieces
        ),
        {"type": "message-end", "event": "message-end", "delta": end, "data": {"delta": end}},
    ]
    return [json.dumps(event).encode() + b"\n" for event in events]


# What a model answers when a JSON schema is asked for (Gemini CLI's classifier asks one): the smallest value
# of the schema's shape, as JSON text.
def schema_example(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        return {name: schema_example(sub) for name, sub in (schema.get("properties") or {}).items()}
    return {"string": "x", "integer": 1, "number": 1, "boolean": True, "array": []}.get(kind)


def asked_schema(body: dict[str, Any]) -> Any:
    """The JSON schema a request asks its answer to follow, in any dialect; None if it asks none."""
    config = body.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json":
        return config.get("responseJsonSchema") or config.get("responseSchema") or {}
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or {}
    output_format = body.get("output_format") or (body.get("output_config") or {}).get("format") or {}
    if output_format.get("type") == "json_schema":
        return output_format.get("schema") or {}
    return None
