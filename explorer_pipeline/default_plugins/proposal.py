"""The default proposer: stage 2's model call, a parser, and retries with a re-prompt."""

from __future__ import annotations

from collections.abc import Mapping

from langchain_core.messages import AIMessage, HumanMessage

from ..errors import ParseError
from ..llm import retrying, to_messages
from ..stages import Parser, Request, StageContext
from ..state import Stateless


class ParsingProposer(Stateless):
    """Renders the prompt set's stage-2 template for the update kind, asks the model (with the
    provider's structured-output constraint), and reads the numbers with ``parser``. A reply
    that does not parse is retried, the model seeing its answer and the parse error
    (``reprompt``); transient provider errors are retried too, all within ``explorer.max_attempts``
    calls.

    :param context: the run's :class:`~explorer_pipeline.stages.StageContext`.
    :param parser: reads the reply (the registered parser chosen by the ``parser`` option).
    :param reprompt: append the failed answer and the parse error to the retried conversation.
    """

    def __init__(self, context: StageContext, parser: Parser, *, reprompt: bool = True) -> None:
        self.context, self.parser, self.reprompt = context, parser, bool(reprompt)

    async def propose(self, variables: Mapping[str, str], request: Request) -> list[float]:
        """``spec.n`` numbers read from the model's stage-2 reply, retried as the class says."""
        context = self.context
        models = context.require_models("the proposer")
        template = context.prompt_set.proposal_for(context.spec.update_kind)
        messages = to_messages(template.render(variables))
        async for attempt in retrying(context.retry, (ParseError, *models.transient_errors), request, "proposal"):
            with attempt:
                text = await models.ask("proposal", messages, request)
                try:
                    return self.parser.parse(text, context.spec)
                except ParseError as exc:
                    if self.reprompt:  # the model sees its answer and what was wrong with it
                        follow_up = f"That answer could not be used: {exc}. {variables.get('output_format', '')}"
                        messages = [*messages, AIMessage(text[:2000]), HumanMessage(follow_up.strip())]
                    raise
        raise ParseError("no attempt was made")  # pragma: no cover - tenacity re-raises the last error
