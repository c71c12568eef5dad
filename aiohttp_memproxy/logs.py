"""structlog configuration: console lines on a TTY, one JSON object per line otherwise (systemd's journal).

Only ``cli`` and the tests call ``configure``. Standard-library loggers (aiohttp, LiteLLM) are routed through
the same renderer so a traceback aiohttp logs is one JSON event too.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "console", "json"]

# Libraries that log a request's headers (keys among them) or body (the prompt) below WARNING, at any level
# this gateway is run with, --log-level debug included: LiteLLM its request and its kwargs, the openai and
# anthropic SDKs their "Request options" (headers and JSON body), httpx and httpcore URLs (a key in a query
# string) and header events, aiohttp its client and server internals. Held at WARNING, whatever the level (so
# they do not even format those records); the root handler's filter drops any other library's too.
LIBRARY_FLOOR = logging.WARNING
QUIET_LOGGERS = {
    "LiteLLM": logging.WARNING,
    "LiteLLM Router": logging.WARNING,
    "LiteLLM Proxy": logging.WARNING,
    "openai": logging.WARNING,
    "anthropic": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "aiohttp": logging.WARNING,
}


def adopt_library_loggers() -> None:
    """LiteLLM attaches a plain-text handler of its own at import (the SDKs too, with OPENAI_LOG or
    ANTHROPIC_LOG set), and its records also propagate to ours: each line came out twice, once outside our
    format. Drop those handlers (LiteLLM's filters, which redact secrets, stay on the loggers), so records go
    through the root handler only, and hold the levels again, which those variables lower at import. Called
    right after LiteLLM's import (llm), and by serve once every library is imported."""
    root = logging.getLogger().level
    for name, floor in QUIET_LOGGERS.items():
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(max(floor, root))


def configure(fmt: LogFormat = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if fmt == "json":
        # Tracebacks as data, without local variables: locals can hold keys and request bodies.
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(),
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
            if importlib.util.find_spec("rich") is not None
            else structlog.dev.plain_traceback,
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    # Every standard-library record is a library's (the gateway's own lines go through structlog alone):
    # below WARNING, none passes, whichever logger wrote it (botocore logs a signed request's headers at
    # DEBUG, urllib3 its URLs), so a library this list does not name cannot print a key either.
    handler.addFilter(lambda record: record.levelno >= LIBRARY_FLOOR)
    handler.addFilter(_not_litellm_bookkeeping)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, numeric))
    warnings.showwarning = _log_warning


# LiteLLM's records about its own logging of a call (which the gateway does not use: its log line, metrics and
# ledger are its own), raised as errors with a traceback on every request of a model its price map lacks
# (its Messages stream's cost for its spend logs, 1.110.2).
LITELLM_BOOKKEEPING = ("Error creating Anthropic response logging payload",)


def _not_litellm_bookkeeping(record: logging.LogRecord) -> bool:
    return not (
        record.name.startswith("LiteLLM")
        and isinstance(record.msg, str)
        and record.msg.startswith(LITELLM_BOOKKEEPING)
    )


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A library's Python warning as one log line: its class and where it was raised, never its text (a
    pydantic serializer warning quotes the value it dumped: an answer, a prompt)."""
    log: Any = structlog.get_logger()
    log.warning("library_warning", category=category.__name__, where=f"{_module_of(filename)}:{lineno}")


def _module_of(filename: str) -> str:
    """site-packages/pydantic/main.py -> pydantic/main.py: no home directory or venv path in a log line."""
    parts = filename.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages", "lib"):
        if marker in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(marker) :])
    return "/".join(parts[-2:])
