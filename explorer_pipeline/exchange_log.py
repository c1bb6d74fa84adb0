"""The exchange log: every request and response as one JSON line, secrets redacted."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage

_SECRET_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|authorization|token)\"?\s*[:=]\s*\"?)[^\s\",]{6,}"),
)
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)


def secret_values() -> list[str]:
    """Values of environment variables whose names look secret (``*_API_KEY``, ``*TOKEN*``...)."""
    return [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 6]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every value in ``secrets`` and anything shaped like a key or token replaced by ``[REDACTED]``."""
    for value in secrets:
        text = text.replace(value, "[REDACTED]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[REDACTED]", text)
    return text


class ExchangeLog:
    """Appends one JSON object per LLM call to ``path`` (flushed each time)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._secrets = secret_values()
        self._file = self.path.open("a", encoding="utf-8")

    def record(self, *, stage: str, attempt: int, episode: int, messages: list[BaseMessage],
               reply: str | None, error: str | None, latency_s: float, usage: dict[str, Any] | None) -> None:
        """Append one LLM call (request messages, reply or error, latency, token usage), redacted."""
        entry = {
            "time": round(time.time(), 3),
            "episode": episode,
            "stage": stage,
            "attempt": attempt,
            "request": [{"role": m.type, "content": redact(str(m.content), self._secrets)} for m in messages],
            "response": None if reply is None else redact(reply, self._secrets),
            "error": None if error is None else redact(error, self._secrets),
            "latency_s": round(latency_s, 4),
            "usage": usage,
        }
        line = json.dumps(entry, ensure_ascii=False)
        with self._lock:
            if not self._file.closed:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        """Close the file; later records are dropped."""
        with self._lock:
            self._file.close()
