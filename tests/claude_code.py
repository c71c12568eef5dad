"""Claude Code's first request as it really is (2.1.3xx, read off the real CLI's traffic): ~90 KB, a ~29 KB
system prompt and ~48 KB of tools with JSON-schema inputs, extended thinking, context management, a JSON
string as metadata.user_id, its betas and ``?beta=true``. Synthetic text, real shape."""

from __future__ import annotations

import json
from typing import Any

BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
    "fine-grained-tool-streaming-2025-05-14"
)
HEADERS = {
    "User-Agent": "claude-cli/2.1.328 (external, sdk-cli)",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": BETAS,
    "x-claude-code-session-id": "0b9e8a2c-5d1f-4c3a-9e7b-2f6d8c4a1b3e",
    "x-app": "cli",
}
PATH = "/v1/messages?beta=true"
TOOL_NAMES = (
    "Task", "Bash", "Glob", "Grep", "ExitPlanMode", "Read", "Edit", "Write", "NotebookEdit", "WebFetch",
    "TodoWrite", "WebSearch", "BashOutput", "KillShell", "SlashCommand", "Skill",
)  # fmt: skip


def _tool(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{name}: " + "Use this tool when the task calls for it; read the rules first. " * 45,
        "input_schema": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "What to run or read, exactly."},
                "timeout": {"type": "number", "description": "Milliseconds, at most 600000."},
                "paths": {"type": "array", "items": {"type": "string"}, "description": "Files."},
                "mode": {"type": "string", "enum": ["default", "plan", "acceptEdits"]},
            },
            "required": ["command"],
            "additionalProperties": False,
        },
    }


def first_request(model: str, stream: bool = True) -> dict[str, Any]:
    user_id = {
        "device_id": "4f" * 32,
        "account_uuid": "7d3c1e52-9a4b-4f6e-8c2d-1b5a9e3f7c60",
        "session_id": HEADERS["x-claude-code-session-id"],
    }
    return {
        "model": model,
        "max_tokens": 32000,
        "stream": stream,
        "system": [
            {
                "type": "text",
                "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "text",
                "text": "You are an interactive CLI tool that helps users with software engineering tasks. "
                * 350,
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                    {"type": "text", "text": "Say hello.", "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
        "tools": [_tool(name) for name in TOOL_NAMES],
        "thinking": {"type": "enabled", "budget_tokens": 31999, "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": json.dumps(user_id)},
    }
