"""Registers the default summariser, parser and validator under the name ``default``."""

from ..hookspecs import hookimpl
from ..parsing import DefaultParser
from ..summariser import DefaultSummariser
from ..validation import DefaultValidator


@hookimpl
def register_summarisers(register):
    register("default", DefaultSummariser)


@hookimpl
def register_parsers(register):
    register("default", DefaultParser)


@hookimpl
def register_validators(register):
    register("default", DefaultValidator)
