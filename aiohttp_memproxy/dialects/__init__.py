"""One module per client API: how its answers are framed on a stream, how its usage reads, how its errors
look. Pure: no I/O, no LiteLLM, no aiohttp.

``openai_chat`` (chat completions, and every route that is none of the others), ``anthropic`` (Messages),
``responses`` (the Responses API, whose errors are OpenAI's), ``gemini`` (Google's Gemini API).
"""

from __future__ import annotations

from typing import Literal

# The shape of a route's errors.
Dialect = Literal["openai", "anthropic", "gemini"]
