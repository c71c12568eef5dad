"""aiohttp-memproxy: a local LLM gateway for IDE clients."""

__version__ = "0.1.0"
