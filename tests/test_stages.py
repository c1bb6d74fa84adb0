"""Stages as registered implementations: custom analysers and proposers run in the pipeline, the
checks on what a factory returns, the default proposer's options, and the stage reference docs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from explorer_pipeline import hookimpl
from explorer_pipeline.errors import ParseError, UsageError
from explorer_pipeline.plugins import make_plugin_manager
from explorer_pipeline.session import Catalogues, ExplorerConfig, open_explorer
from explorer_pipeline.stages import PARSER, STAGES, Request, StageContext
from explorer_pipeline.types import ActionSpec, EpisodeRecord, ExplorationUpdate, RequestFailure, StageUsage

from .fakes import ReplayChatModel
from .pipelines import make_context, make_models, pipeline_for

SPEC = ActionSpec.discrete(3, ["left", "stay", "right"])
RECORD = EpisodeRecord(12.5, 40, "Test-v0", 7, tuple([0, 1, 2, 2] * 10))
DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugin_hooks.md"


class FixedProposer:
    """What a non-text proposer (token probabilities, say) looks like: it talks to its model its own
    way and keeps the request's tally true by hand."""

    def __init__(self, context: StageContext, *, values=(1.0, 2.0, 1.0)) -> None:
        self.context, self.values = context, tuple(values)
        self.seen: list[dict] = []

    async def propose(self, variables, request: Request):
        self.seen.append(dict(variables))
        request.count_call("proposal")
        request.add_tokens("proposal", StageUsage(7, 1))
        return list(self.values)


class EchoAnalyser:
    def __init__(self, context: StageContext) -> None:
        self.calls = 0

    async def analyse(self, variables, request: Request) -> str:
        self.calls += 1
        return f"ANALYSIS OF EPISODE {request.record.episode_index}"


class Stages:
    """A plugin that registers an analyser and a proposer, keeping the objects it built."""

    __name__ = "custom-stages"

    def __init__(self) -> None:
        self.built: dict[str, object] = {}

    def _keep(self, key, factory):
        def build(context, **options):
            self.built[key] = factory(context, **options)
            return self.built[key]
        build.__doc__ = factory.__doc__
        build.__signature__ = inspect.signature(factory)
        return build

    @hookimpl
    def register_analysers(self, register):
        register("echo", self._keep("analyser", EchoAnalyser))

    @hookimpl
    def register_proposers(self, register):
        register("fixed", self._keep("proposer", FixedProposer))


def custom_catalogues(*plugins) -> Catalogues:
    return Catalogues(make_plugin_manager(autoload=False, extra_plugins=plugins))


def build(set_name="paper", catalogues=None, replies=('{"probabilities": [1, 1, 2]}',), analysis=("An analysis.",),
          **config):
    models = make_models({"analysis": ReplayChatModel(script=list(analysis)),
                          "proposal": ReplayChatModel(script=list(replies))})
    config = ExplorerConfig(prompt_set=set_name, floor=0.0, **config)
    context = make_context(SPEC, set_name, models=models, config=config, catalogues=catalogues)
    return pipeline_for(context, catalogues), models


# --------------------------------------------------------------------------- custom analysers and proposers


async def test_a_registered_proposer_replaces_model_call_and_parsing():
    plugin = Stages()
    pipeline, models = build(catalogues=custom_catalogues(plugin),
                             proposer={"name": "fixed", "options": {"values": [1, 2, 1]}})
    update = await pipeline.handle(RECORD, [RECORD], version=3)
    assert isinstance(update, ExplorationUpdate) and update.values == pytest.approx((0.25, 0.5, 0.25))
    proposer = plugin.built["proposer"]
    assert proposer.seen[0]["analysis"] == "An analysis."  # the default analyser ran first
    assert models.runnable("proposal").calls == []  # the default proposal model was never asked
    # provenance counts the proposer's own call and tokens next to the analyser's
    assert update.provenance.attempts == 2
    assert update.provenance.tokens["proposal"] == StageUsage(7, 1)
    assert update.provenance.tokens["analysis"] == StageUsage(10, 5)


async def test_a_registered_analyser_feeds_the_default_proposer():
    plugin = Stages()
    pipeline, models = build(catalogues=custom_catalogues(plugin), analyser="echo")
    update = await pipeline.handle(RECORD, [RECORD], version=1)
    assert isinstance(update, ExplorationUpdate)
    assert plugin.built["analyser"].calls == 1
    assert update.provenance.analysis == "ANALYSIS OF EPISODE 7"
    assert "ANALYSIS OF EPISODE 7" in models.runnable("proposal").calls[0][-1].content
    assert models.runnable("analysis").calls == []


async def test_single_stage_sets_do_not_call_the_analyser():
    plugin = Stages()
    pipeline, _ = build("single-stage", catalogues=custom_catalogues(plugin), analyser="echo")
    assert isinstance(await pipeline.handle(RECORD, [RECORD], version=1), ExplorationUpdate)
    assert plugin.built["analyser"].calls == 0


async def test_the_random_control_calls_no_stage_model():
    plugin = Stages()
    pipeline, _ = build("random", catalogues=custom_catalogues(plugin), analyser="echo", proposer="fixed")
    update = await pipeline.handle(RECORD, [RECORD], version=1)
    assert update.source == "control" and update.provenance.attempts == 0
    assert plugin.built["analyser"].calls == 0 and plugin.built["proposer"].seen == []


async def test_a_crashing_pure_stage_is_a_stage_error_not_a_provider_error(caplog):
    class Buggy:
        __name__ = "buggy"

        @hookimpl
        def register_validators(self, register):
            class Broken:
                def validate(self, values, spec):
                    return values[99]

            register("broken", lambda context: Broken())

    pipeline, _ = build(catalogues=custom_catalogues(Buggy()), validator="broken")
    failure = await pipeline.handle(RECORD, [RECORD], version=1)
    assert isinstance(failure, RequestFailure) and failure.reason == "stage_error"
    assert failure.detail == "validator Broken raised IndexError: list index out of range"
    assert "Traceback" in caplog.text  # a plugin bug is logged with its traceback


# --------------------------------------------------------------------------- what a factory returns


def plugin_with(hook: str, factory):
    class Plugin:
        __name__ = "odd"

    setattr(Plugin, hook, hookimpl(specname=hook)(lambda self, register: register("odd", factory)))
    return Plugin()


class SyncAnalyser:
    def analyse(self, variables, request):
        return "not awaited"


class AsyncSummariser:
    async def summarise(self, record, history, spec):
        return {}


@pytest.mark.parametrize(("key", "hook", "factory", "message"), [
    ("analyser", "register_analysers", lambda context: SyncAnalyser(),
     r"analyser 'odd' \(from plugin 'odd'\): SyncAnalyser.analyse must be an 'async def' method"),
    ("summariser", "register_summarisers", lambda context: AsyncSummariser(),
     r"summariser 'odd' \(from plugin 'odd'\): AsyncSummariser.summarise must be a plain 'def'"),
    ("proposer", "register_proposers", lambda context: object(),
     r"proposer 'odd' \(from plugin 'odd'\) returned object, which has no propose\(\) method"),
])
def test_a_stage_of_the_wrong_shape_fails_when_the_explorer_is_built(key, hook, factory, message):
    pm = make_plugin_manager(autoload=False, extra_plugins=[plugin_with(hook, factory)])
    with pytest.raises(TypeError, match=message):
        open_explorer(ExplorerConfig(**{key: "odd"}), "CartPole-v1", ActionSpec.discrete(2), plugin_manager=pm)


def test_stage_factories_get_the_runs_context():
    seen: list[StageContext] = []

    def factory(context):
        seen.append(context)
        return EchoAnalyser(context)

    pm = make_plugin_manager(autoload=False, extra_plugins=[plugin_with("register_analysers", factory)])
    config = ExplorerConfig(analyser="odd", max_attempts=5, sample_m=9)
    with open_explorer(config, "CartPole-v1", ActionSpec.discrete(2), seed=4, plugin_manager=pm):
        pass
    (context,) = seen
    assert context.config is config and context.seed == 4 and context.retry.max_attempts == 5
    assert context.spec.labels == ("push the cart to the left", "push the cart to the right")  # the task's labels
    assert context.prompt_set.id == "paper" and context.task.env_id == "CartPole-v1"
    assert context.models is not None and context.models.provider == "scripted"
    assert context.parser().parse('{"probabilities": [0.5, 0.5]}', context.spec) == [0.5, 0.5]


# --------------------------------------------------------------------------- the default proposer's options


async def test_retries_are_recorded_in_the_provenance():
    pipeline, _ = build(replies=["no numbers here", '{"probabilities": [1, 1, 2]}'])
    update = await pipeline.handle(RECORD, [RECORD], version=1)
    assert update.provenance.attempts == 3
    assert update.provenance.retry_reasons == ("proposal: ParseError: no numbers found; expected 3",)
    assert update.to_json()["retries"] == ["proposal: ParseError: no numbers found; expected 3"]
    first_try, _ = build()
    clean = await first_try.handle(RECORD, [RECORD], version=1)
    assert clean.provenance.retry_reasons == () and clean.to_json()["reason"] is None


async def test_reprompt_can_be_turned_off():
    pipeline, models = build(replies=["no numbers here", '{"probabilities": [1, 1, 2]}'],
                             proposer={"options": {"reprompt": False}})
    assert isinstance(await pipeline.handle(RECORD, [RECORD], version=1), ExplorationUpdate)
    first, second = models.runnable("proposal").calls
    assert second == first  # the same conversation again, without the failed answer


async def test_the_parser_option_chooses_a_registered_parser():
    class Strict:
        __name__ = "strict-parsers"

        @hookimpl
        def register_parsers(self, register):
            def strict(context, *, prefix: str = "ANSWER:"):
                """Only lines starting with a prefix."""

                class Parser:
                    def parse(self, text, spec):
                        if not text.startswith(prefix):
                            raise ParseError(f"the answer must start with {prefix!r}")
                        return [float(x) for x in text[len(prefix):].split(",")]

                return Parser()

            register("strict", strict)

    catalogues = custom_catalogues(Strict())
    replies = ['{"probabilities": [1, 1, 2]}', "ANSWER: 1, 2, 1"]
    pipeline, _ = build(catalogues=catalogues, replies=replies,
                        proposer={"options": {"parser": "strict", "parser_options": {"prefix": "ANSWER:"}}})
    update = await pipeline.handle(RECORD, [RECORD], version=1)
    assert update.values == pytest.approx((0.25, 0.5, 0.25))
    assert update.provenance.retry_reasons == ("proposal: ParseError: the answer must start with 'ANSWER:'",)
    with pytest.raises(UsageError, match=r"parser 'strict' .* not accept option\(s\) \['sep'\]; it accepts: prefix"):
        build(catalogues=catalogues, proposer={"options": {"parser": "strict", "parser_options": {"sep": ";"}}})
    with pytest.raises(UsageError, match="parser_options must be a mapping"):
        build(proposer={"options": {"parser_options": "prefix=1"}})


# --------------------------------------------------------------------------- the reference documentation


def method_signature(protocol: type, method: str) -> str:
    params = list(inspect.signature(getattr(protocol, method)).parameters)[1:]  # without self
    return f"{method}({', '.join(params)})"


@pytest.mark.parametrize("kind", [*STAGES, PARSER], ids=lambda kind: kind.key)
def test_stage_interfaces_are_documented(kind):
    text = DOCS.read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if re.match(r"#+\s", line)]
    assert any(kind.protocol.__name__ in line for line in headings), f"no heading for {kind.protocol.__name__}"
    prefix = "async def " if kind.is_async else "def "
    assert prefix + method_signature(kind.protocol, kind.method) in text, kind.key
    assert f"explorer.{kind.key}" in text or kind is PARSER
