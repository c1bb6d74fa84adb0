"""Registers the ``scripted`` provider."""

from collections.abc import Callable

from ..hookspecs import hookimpl
from .scripted_model import ScriptedProvider


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    """Register the ``scripted`` provider."""
    register("scripted", ScriptedProvider())
