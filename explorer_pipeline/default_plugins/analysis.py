"""The default analyser: stage 1's chain (prompt template -> chat model -> cleaned text)."""

from __future__ import annotations

from collections.abc import Mapping

from ..llm import retrying, to_messages
from ..stages import Request, StageContext
from ..state import Stateless
from .parsing import clean_reply

#: the longest stage-1 reply (characters) that reaches stage 2, the exchange log and the provenance
DEFAULT_MAX_CHARS = 4000


class ChainAnalyser(Stateless):
    """Renders the prompt set's ``analysis`` template, asks the model, and returns the reply
    without ``<think>`` blocks or code fences. Transient provider errors (timeouts, connection
    resets) are retried under the run's retry policy; any other error propagates.

    :param context: the run's :class:`~explorer_pipeline.stages.StageContext`.
    :param max_chars: the reply is cut to this many characters before it is cleaned, logged or
        shown to stage 2 (a model that rambles must not blow up the stage-2 prompt).
    """

    def __init__(self, context: StageContext, *, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise ValueError(f"max_chars must be a whole number >= 1, got {max_chars!r}")
        self.context, self.max_chars = context, max_chars

    async def analyse(self, variables: Mapping[str, str], request: Request) -> str:
        """The analysis text for ``variables`` (stage 1 of ``request``)."""
        template = self.context.prompt_set.analysis
        if template is None:
            raise RuntimeError(f"prompt set {self.context.prompt_set.id!r} has no analysis template")
        models = self.context.require_models("the analyser")
        messages = to_messages(template.render(variables))
        async for attempt in retrying(self.context.retry, models.transient_errors, request, "analysis"):
            with attempt:
                text = clean_reply(await models.ask("analysis", messages, request, max_chars=self.max_chars))
        return text.strip() or "(no analysis)"
