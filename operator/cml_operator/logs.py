"""Logging set-up: text for people, JSON (python-json-logger) for log pipelines.

botocore and urllib3 stay at WARNING whatever the level: their DEBUG output
carries request bodies (user data) and signed headers (session tokens).
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(object_prefix)s%(message)s"
_QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "aiohttp.access")


class _ObjectContext(logging.Filter):
    """Kopf's per-object loggers carry ``k8s_ref``; expose it as ``object`` (namespace/name)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ref = getattr(record, "k8s_ref", None) or {}
        name = ref.get("name") if isinstance(ref, dict) else None
        namespace = ref.get("namespace") if isinstance(ref, dict) else None
        record.object = f"{namespace}/{name}" if name else ""
        record.object_prefix = f"[{record.object}] " if name else ""
        return True


class _DropRoutineTimerSuccess(logging.Filter):
    """Kopf logs every successful timer run at INFO; with a fleet that is noise, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Timer ") and message.endswith(" succeeded."))


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(object)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        ))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_ObjectContext())
    handler.addFilter(_DropRoutineTimerSuccess())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
