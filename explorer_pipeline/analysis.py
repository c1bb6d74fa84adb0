"""The default analyser: stage 1's chain (prompt template -> chat model -> cleaned text)."""

from __future__ import annotations

from collections.abc import Mapping

from .models import retrying, to_messages
from .parsing import clean_reply
from .stages import Request, StageContext


class ChainAnalyser:
    """Renders the prompt set's ``analysis`` template, asks the model, and returns the reply
    without ``<think>`` blocks or code fences. Transient provider errors (timeouts, connection
    resets) are retried under the run's retry policy; any other error propagates.

    :param context: the run's :class:`~explorer_pipeline.stages.StageContext`.
    """

    def __init__(self, context: StageContext) -> None:
        self.context = context

    async def analyse(self, variables: Mapping[str, str], request: Request) -> str:
        """The analysis text for ``variables`` (stage 1 of ``request``)."""
        template = self.context.prompt_set.analysis
        if template is None:
            raise RuntimeError(f"prompt set {self.context.prompt_set.id!r} has no analysis template")
        models = self.context.require_models("the analyser")
        messages = to_messages(template.render(variables))
        async for attempt in retrying(self.context.retry, models.transient_errors, request, "analysis"):
            with attempt:
                text = clean_reply(await models.ask("analysis", messages, request))
        return text.strip() or "(no analysis)"
