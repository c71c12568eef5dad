"""structlog configuration: console lines on a TTY, one JSON object per line otherwise (systemd's journal).

Only ``cli`` and the tests call ``configure``. Standard-library loggers (aiohttp, LiteLLM) are routed through
the same renderer so a traceback aiohttp logs is one JSON event too.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "console", "json"]

# LiteLLM logs request details (headers, sometimes keys) below WARNING: never let those through.
QUIET_LOGGERS = {
    "LiteLLM": logging.WARNING,
    "LiteLLM Router": logging.WARNING,
    "LiteLLM Proxy": logging.WARNING,
}


def adopt_library_loggers() -> None:
    """LiteLLM attaches a plain-text handler of its own at import, and its records also propagate to ours:
    each line came out twice, once outside our format. Drop its handlers (its filters, which redact
    secrets, stay on the loggers), so its records go through the root handler only. Called right after
    the import."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).handlers.clear()


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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, numeric))
