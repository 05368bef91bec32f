"""Structured JSON logs: one object per line, with the ``extra`` fields a call site attaches.

Secrets never reach a log line: settings hold them as ``SecretStr`` (printed as ``**********``) and the
formatter drops any extra field whose name says it is a credential.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRET_WORDS = ("password", "secret", "token", "credential")


class JsonFormatter(logging.Formatter):
    """Formats records as JSON with time, level, logger, message, extras and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # tells apart the processes of `moderation worker` with MODERATION_WORKER_PROCESSES
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not any(word in name.lower() for word in _SECRET_WORDS):
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the whole process; noisy client libraries are kept at warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
