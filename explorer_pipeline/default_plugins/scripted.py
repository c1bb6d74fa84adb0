"""Registers the ``scripted`` provider."""

from ..hookspecs import hookimpl
from ..scripted import ScriptedProvider


@hookimpl
def register_providers(register):
    """Register the ``scripted`` provider."""
    register("scripted", ScriptedProvider())
