"""structlog setup: JSON lines when stderr is not a terminal (or format=json), console otherwise.

Every registered secret (the private key, its 0x-less form, keystore passwords) is scrubbed from
every log field before rendering, whatever the call site logged.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from keeper.units import decimal_text as amount_text  # re-exported: the log's rendering of value amounts

_SECRETS: set[str] = set()
REDACTED = "[REDACTED]"


def register_secret(secret: str) -> None:
    s = secret.strip()
    if len(s) >= 8:
        _SECRETS.add(s)
        _SECRETS.add(s.lower())
        if s.lower().startswith("0x"):
            _SECRETS.add(s[2:])
            _SECRETS.add(s[2:].lower())


def scrub(text: str) -> str:
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, REDACTED)
    return text


def _scrub_value(v: Any) -> Any:
    if isinstance(v, str):
        return scrub(v)
    if isinstance(v, dict):
        return {k: _scrub_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return type(v)(_scrub_value(x) for x in v)
    return v


def _redact(_logger: Any, _name: str, event: dict) -> dict:
    if not _SECRETS:
        return event
    return {k: _scrub_value(v) for k, v in event.items()}


# Value-token amounts (1e18 fixed point internally) rendered as exact decimal strings in token units
# ("12.5" quote tokens). Gas is in gas units; fees per gas and gas costs stay integers in wei; any other
# protocol field is an integer in its token's base units (big ones as strings, below).
VALUE_AMOUNT_FIELDS = frozenset(
    {"expected_reward", "reward", "est_cost", "est_profit", "min_profit", "profit", "gas_cost_quote", "native_price", "budget"}
)


def _amounts_as_decimals(_logger: Any, _name: str, event: dict) -> dict:
    for k in VALUE_AMOUNT_FIELDS.intersection(event):
        v = event[k]
        if isinstance(v, int) and not isinstance(v, bool):
            event[k] = amount_text(v)
    return event


def _stringify_big_ints(_logger: Any, _name: str, event: dict) -> dict:
    """Integers beyond 2**53 as strings so JSON consumers (jq, JS) keep every digit."""
    for k, v in event.items():
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53:
            event[k] = str(v)
    return event


def configure_logging(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    json_out = fmt == "json" or (fmt == "auto" and not getattr(stream, "isatty", lambda: False)())
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _amounts_as_decimals,
        _stringify_big_ints,
        _redact,
    ]
    renderer = structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**bind: Any) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger().bind(**bind)
