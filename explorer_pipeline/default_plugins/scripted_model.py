"""The scripted provider: deterministic answers for tests, dry runs and benchmarks."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field

from ..errors import UsageError
from ..providers import Provider, ProviderSettings
from ..types import ActionSpec

#: The token the scripted model gives the probability that falls on no label.
NON_LABEL_TOKEN = "The"


class ScriptedChatModel(BaseChatModel):
    """Answers from a script instead of a model.

    Stage-2 replies come, in order of precedence, from ``replies`` (cycled), ``reply`` (fixed), or
    a rule: the emphasised action (0.7 of the mass) or the bias sign rotates with every stage-2
    call, so successive updates differ. Stage-1 replies are ``analysis``. ``latency_s`` is slept before each answer.

    A call bound with ``logprobs=True`` (what the token-probability proposer asks for) is answered
    from ``label_probs`` when it is set: the first answer token is ``A`` with probability
    ``label_probs[0]``, ``B`` with ``label_probs[1]`` ... (whatever the options say: a model that
    only sees positions), and the rest of the mass goes to the non-label token ``The``. The reply
    is the most likely token, one output token, with the ``top_logprobs`` most likely tokens in
    ``response_metadata["logprobs"]`` (OpenAI's format). Without ``label_probs`` such a call gets
    an ordinary reply with no log-probabilities, as from a server that ignores the request.
    """

    reply: str | None = None
    replies: list[str] = Field(default_factory=list)
    analysis: str = "The agent is still learning; explore actions it has rarely taken."
    latency_s: float = 0.0
    label_probs: list[float] = Field(default_factory=list)
    calls: int = 0
    proposals: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"reply": self.reply, "replies": self.replies, "analysis": self.analysis}

    def get_state(self) -> dict[str, Any]:
        """The call counters, which decide the next rotating reply (:class:`~explorer_pipeline.state.Stateful`)."""
        return {"calls": self.calls, "proposals": self.proposals}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state`'s result."""
        self.calls, self.proposals = int(state["calls"]), int(state["proposals"])

    def _answer(self, stage: str, n: int, kind: str) -> str:
        self.calls += 1
        if stage != "proposal":
            return self.analysis
        index = self.proposals
        self.proposals += 1
        if self.replies:
            return self.replies[index % len(self.replies)]
        if self.reply is not None:
            return self.reply
        if kind == "distribution":
            if n == 1:
                return json.dumps({"probabilities": [1.0]})
            probs = [round(0.3 / (n - 1), 4)] * n
            probs[index % n] = 0.7
            return json.dumps({"probabilities": probs})
        sign = 1.0 if index % 2 == 0 else -1.0
        return json.dumps({"bias": [sign * 0.2] * n})

    def _logprob_result(self, messages: list[BaseMessage], top_logprobs: int) -> ChatResult:
        self.calls += 1
        probs = {chr(ord("A") + i): p for i, p in enumerate(self.label_probs) if p > 0}
        rest = 1.0 - sum(self.label_probs)
        if rest > 1e-12:
            probs[NON_LABEL_TOKEN] = rest
        ranked = sorted(probs.items(), key=lambda item: -item[1])
        top = [{"token": token, "logprob": math.log(p), "bytes": None} for token, p in ranked[:max(top_logprobs, 1)]]
        token, logprob = str(top[0]["token"]), top[0]["logprob"]
        prompt_tokens = sum(len(str(m.content).split()) for m in messages)
        usage = {"input_tokens": prompt_tokens, "output_tokens": 1, "total_tokens": prompt_tokens + 1}
        metadata = {"model_name": "scripted",
                    "logprobs": {"content": [{"token": token, "logprob": logprob, "bytes": None, "top_logprobs": top}]}}
        message = AIMessage(content=token, usage_metadata=usage, response_metadata=metadata)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _result(self, messages: list[BaseMessage], text: str) -> ChatResult:
        prompt_tokens = sum(len(str(m.content).split()) for m in messages)
        usage = {"input_tokens": prompt_tokens, "output_tokens": len(text.split()),
                 "total_tokens": prompt_tokens + len(text.split())}
        message = AIMessage(content=text, usage_metadata=usage, response_metadata={"model_name": "scripted"})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _reply(self, messages: list[BaseMessage], stage: str, n: int, kind: str, logprobs: bool,
               top_logprobs: int) -> ChatResult:
        if logprobs and self.label_probs:
            return self._logprob_result(messages, top_logprobs)
        return self._result(messages, self._answer(stage, n, kind))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, *,
                  stage: str = "proposal",
                  n: int = 1, kind: str = "distribution", logprobs: bool = False, top_logprobs: int = 0,
                  **kwargs: Any) -> ChatResult:
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._reply(messages, stage, n, kind, logprobs, top_logprobs)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                         *, stage: str = "proposal",
                         n: int = 1, kind: str = "distribution", logprobs: bool = False, top_logprobs: int = 0,
                         **kwargs: Any) -> ChatResult:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._reply(messages, stage, n, kind, logprobs, top_logprobs)


def parse_label_probs(text: str) -> list[float]:
    """``"0.6,0.3,0.1"`` as first-token probabilities of the labels A, B, C; UsageError unless
    they are finite, non-negative and sum to at most 1."""
    try:
        probs = [float(part) for part in text.split(",")]
    except ValueError:
        probs = []
    if not probs or not all(math.isfinite(p) and p >= 0 for p in probs) or sum(probs) > 1 + 1e-9:
        raise UsageError(f"scripted option logprobs must be comma-separated probabilities of the labels A, B, ... "
                         f"(non-negative, summing to at most 1), got {text!r}")
    return probs


class ScriptedProvider(Provider):
    """Options: ``reply`` (fixed stage-2 text), ``file`` (one stage-2 reply per line, cycled),
    ``analysis`` (stage-1 text), ``latency`` (seconds per call), ``logprobs`` (``0.6,0.3,0.1``:
    answer token-probability requests with these first-token probabilities of the labels A, B,
    C ... by position, the rest on a non-label token; without it the provider has no
    log-probabilities)."""

    name = "scripted"
    description = "deterministic answers (fixed, from a file, or rotating); optional latency"
    structured_output_methods = ("none",)
    supports_logprobs = True

    def create(self, settings: ProviderSettings) -> BaseChatModel:
        """The scripted chat model; UsageError for an unknown or invalid option."""
        options = dict(settings.options)
        unknown = set(options) - {"reply", "file", "analysis", "latency", "logprobs"}
        if unknown:
            raise UsageError(f"unknown scripted provider option(s) {sorted(unknown)}; "
                             "allowed: reply, file, analysis, latency, logprobs")
        kwargs: dict[str, Any] = {}
        if "reply" in options:
            kwargs["reply"] = options["reply"]
        if "file" in options:
            path = Path(options["file"])
            try:
                kwargs["replies"] = [line for line in path.read_text().splitlines() if line.strip()]
            except OSError as exc:
                raise UsageError(f"cannot read scripted replies file {path}: {exc.strerror}") from None
            if not kwargs["replies"]:
                raise UsageError(f"scripted replies file {path} has no replies (one per non-blank line)")
        if "analysis" in options:
            kwargs["analysis"] = options["analysis"]
        if "latency" in options:
            try:
                kwargs["latency_s"] = float(options["latency"])
            except ValueError:
                raise UsageError(
                    f"scripted option latency must be a number of seconds, got {options['latency']!r}") from None
            if not (math.isfinite(kwargs["latency_s"]) and kwargs["latency_s"] >= 0):
                raise UsageError(f"scripted option latency must be a finite number >= 0, got {options['latency']!r}")
        if "logprobs" in options:
            kwargs["label_probs"] = parse_label_probs(options["logprobs"])
        return ScriptedChatModel(**kwargs)

    def model_name(self, settings: ProviderSettings) -> str:
        """Always ``scripted``."""
        return "scripted"

    def stage_model(self, model: BaseChatModel, stage: str, settings: ProviderSettings,
                    spec: ActionSpec) -> Runnable[Any, Any]:
        """The model bound to the stage and the action spec, so it answers in the right shape."""
        return model.bind(stage=stage, n=spec.n, kind=spec.update_kind)

    def preflight(self, model: BaseChatModel, settings: ProviderSettings, *,
                  logprobs: bool = False) -> dict[str, Any]:
        """Nothing to reach: the capabilities, without I/O (log-probabilities only with the option)."""
        return {"checked": "none", "structured_output": "none", "logprobs": "logprobs" in settings.options}

    def logprobs_unsupported(self, settings: ProviderSettings) -> str | None:
        """Log-probabilities only with ``--option logprobs=...``."""
        if "logprobs" in settings.options:
            return None
        return ("provider 'scripted' returns token log-probabilities only with --option logprobs=P_A,P_B,... "
                "(first-token probabilities of the labels by position)")

    def logprob_model(self, model: BaseChatModel, settings: ProviderSettings, spec: ActionSpec,
                      top_logprobs: int) -> Runnable[Any, Any]:
        """The model bound for one-token answers with the top log-probabilities."""
        return model.bind(stage="proposal", n=spec.n, kind=spec.update_kind, logprobs=True, top_logprobs=top_logprobs)
