"""The one place structlog is configured; every other module only calls ``structlog.get_logger()``.

Logs go to stderr, never stdout, so command output stays parseable. The level comes from
``OPTIMIZER_LOG_LEVEL`` (default WARNING, so a normal CLI run prints no log lines) and the
format from ``OPTIMIZER_LOG_FORMAT``: ``json`` (one JSON object per line, the default) or
``console`` (key=value).

Exceptions are logged as structured data (type, message, and each frame's file, line and
function) and never with local variables: a frame's locals hold portfolios, requests and keys,
which do not belong in a log.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

LEVEL_ENV = "OPTIMIZER_LOG_LEVEL"
FORMAT_ENV = "OPTIMIZER_LOG_FORMAT"
FORMATS = ("json", "console")


class _Stderr:
    """Writes to whatever ``sys.stderr`` is at the time of writing.

    Binding the stream at configure time would keep writing to a replaced stream (pytest's
    capture, a redirected stderr) after it has been swapped out.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(
    level: str | None = None,
    fmt: str | None = None,
    stream: TextIO | None = None,
    *,
    stdlib: bool = False,
) -> None:
    """Configure structlog; arguments override the environment variables.

    With ``stdlib=True`` the standard library's root logger (what SDKs and servers such as mcp
    and uvicorn log to) is also sent to stderr at the same level, replacing its handlers: a
    server whose stdout is a protocol stream must not depend on how its host set logging up.

    Raises:
        ValueError: an unknown level or format name (from an argument or the environment).
    """
    level_name = (level or os.environ.get(LEVEL_ENV) or "WARNING").upper()
    level_no = logging.getLevelNamesMapping().get(level_name)
    if level_no is None:
        raise ValueError(
            f"{LEVEL_ENV}={level_name!r} is not a log level; use DEBUG, INFO, WARNING or ERROR"
        )
    fmt_name = (fmt or os.environ.get(FORMAT_ENV) or "json").lower()
    if fmt_name not in FORMATS:
        raise ValueError(
            f"{FORMAT_ENV}={fmt_name!r} is not a log format; use one of {', '.join(FORMATS)}"
        )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # structlog's dict_tracebacks shows locals by default; these frames never carry them.
        structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False, use_rich=False)
        ),
    ]
    if fmt_name == "json":
        processors.append(structlog.processors.JSONRenderer(sort_keys=True))
    else:
        processors.append(structlog.processors.KeyValueRenderer(sort_keys=True))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(file=stream or _Stderr()),  # type: ignore[arg-type]
        # Not cached, so a reconfiguration (another level, a test) reaches module-level loggers.
        cache_logger_on_first_use=False,
    )
    if stdlib:
        handler = logging.StreamHandler(stream or _Stderr())  # type: ignore[arg-type]
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level_no)
