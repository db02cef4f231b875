"""Logging set-up: text for people, JSON (python-json-logger) for log pipelines.

botocore and urllib3 stay at WARNING whatever the level: their DEBUG output
carries request bodies (user data) and signed headers (session tokens).
"""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

#: Kopf's per-record extras: internal objects (settings, raw references), not log fields.
_KOPF_EXTRAS = ("settings", "k8s_skip", "k8s_ref", "object_prefix")
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


#: spec.userData may carry bootstrap secrets, and Kopf's DEBUG lines dump whole objects
#: ("Creation is in progress: {...}"). Those dumps are cut; any other userData value in a
#: Python repr or JSON is masked as a second line of defence.
_BODY_DUMP = re.compile(r"^(\w+ is in progress): .*", re.S)
_USER_DATA = re.compile(r"(?P<repr>'userData':\s*)'(?:[^'\\]|\\.)*'"
                        r'|(?P<json>"userData":\s*)"(?:[^"\\]|\\.)*"')


def redact(text: str) -> str:
    """``text`` without object dumps and with every userData value replaced by ``<redacted>``."""
    if "userData" not in text:
        return text
    text = _BODY_DUMP.sub(r"\1: <object omitted>", text)
    return _USER_DATA.sub(lambda m: f"{m['repr']}'<redacted>'" if m["repr"] else f'{m["json"]}"<redacted>"', text)


class _RedactUserData(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "userData" in message:
            record.msg, record.args = redact(message), None
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
            reserved_attrs=[*RESERVED_ATTRS, *_KOPF_EXTRAS],
            json_default=str,  # never let an odd extra break a log line
        ))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_RedactUserData())
    handler.addFilter(_ObjectContext())
    handler.addFilter(_DropRoutineTimerSuccess())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
