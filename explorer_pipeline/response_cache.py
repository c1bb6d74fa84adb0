"""A SQLite response cache for LangChain chat models, with a replay-only mode.

Entries are keyed by LangChain's own cache key: the serialised messages (``prompt``) and the
model's identifying parameters plus bound call options (``llm_string``: provider class, model,
temperature, token caps, schema). Recorded runs can then rerun offline: in replay mode a miss
raises :class:`~explorer_pipeline.errors.ReplayMissError` instead of calling the model.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation

from .errors import ReplayMissError


def _key(prompt: str, llm_string: str) -> str:
    return hashlib.sha256(f"{llm_string}\x00{prompt}".encode()).hexdigest()


class SQLiteResponseCache(BaseCache):
    """:param path: the database file (created if missing).
    :param replay: answer only from the cache; a miss is an error."""

    def __init__(self, path: str | Path, *, replay: bool = False) -> None:
        self.path = Path(path)
        self.replay = replay
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, llm TEXT, value TEXT)")
        self._db.commit()

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The recorded generations for this prompt and model; None on a miss (ReplayMissError in replay mode)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (_key(prompt, llm_string),)).fetchone()
        if row is None:
            if self.replay:
                raise ReplayMissError("replay mode: no recorded response for this request (the prompt, "
                                      "model or parameters differ from the recorded run)")
            return None
        return [_decode(item) for item in json.loads(row[0])]

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Record the generations for this prompt and model (nothing is written in replay mode)."""
        if self.replay:
            return
        value = json.dumps([_encode(g) for g in return_val])
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                             (_key(prompt, llm_string), llm_string[:500], value))
            self._db.commit()

    def clear(self, **kwargs: Any) -> None:
        """Delete every recorded response."""
        with self._lock:
            self._db.execute("DELETE FROM responses")
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            count: int = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        return count

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def _encode(generation: Generation) -> dict[str, Any]:
    message = getattr(generation, "message", None)
    if message is None:
        return {"text": generation.text}
    return {
        "content": message.content,
        "tool_calls": [dict(call) for call in getattr(message, "tool_calls", []) or []],
        "usage_metadata": dict(message.usage_metadata) if getattr(message, "usage_metadata", None) else None,
        # scalars, and the token log-probabilities a token-probability proposer reads
        "response_metadata": {k: v for k, v in message.response_metadata.items()
                              if isinstance(v, (str, int, float, bool, type(None))) or k == "logprobs"},
    }


def _decode(item: dict[str, Any]) -> Generation:
    if "text" in item:
        return Generation(text=item["text"])
    message = AIMessage(content=item["content"], tool_calls=item["tool_calls"],
                        usage_metadata=item["usage_metadata"], response_metadata=item["response_metadata"])
    return ChatGeneration(message=message)
