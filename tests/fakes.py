"""Test doubles: a chat model that replays a script of replies and exceptions, recording calls."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


class ReplayChatModel(BaseChatModel):
    """Each call takes the next item of ``script``: a string is the reply, an exception is raised.
    The last item repeats. ``delay_s`` is awaited before answering (async calls)."""

    script: list[Any]
    delay_s: float = 0.0
    calls: list[list] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "replay-test"

    def _next(self, messages) -> ChatResult:
        self.calls.append(list(messages))
        item = self.script[min(len(self.calls) - 1, len(self.script) - 1)]
        if isinstance(item, BaseException):
            raise item
        usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=item, usage_metadata=usage))])

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        return self._next(messages)

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self._next(messages)
