"""Registers the prompt sets and task descriptions shipped in ``prompts/``."""

from collections.abc import Callable

from ..hookspecs import hookimpl
from ..prompts import load_prompt_set
from ..resources import prompts_dir
from ..tasks import load_task_file


@hookimpl
def register_prompt_sets(register: Callable[..., None]) -> None:
    """Register every prompt set shipped in ``prompts/sets``."""
    for path in sorted((prompts_dir() / "sets").glob("*.yaml")):
        register(load_prompt_set(path))


@hookimpl
def register_task_descriptions(register: Callable[..., None]) -> None:
    """Register every task description shipped in ``prompts/tasks``."""
    for path in sorted((prompts_dir() / "tasks").glob("*.yaml")):
        for task in load_task_file(path):
            register(task)
