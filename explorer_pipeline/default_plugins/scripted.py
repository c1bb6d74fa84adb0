"""Registers the ``scripted`` provider."""

from ..hookspecs import hookimpl
from ..scripted import ScriptedProvider


@hookimpl
def register_providers(register):
    register("scripted", ScriptedProvider())
