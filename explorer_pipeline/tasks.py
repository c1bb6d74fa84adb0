"""Task descriptions: what the model is told about an environment, as data."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import PromptError


class TaskDescription(BaseModel):
    """The description of one environment.

    :param env_id: gymnasium id (``CartPole-v1``, ``ALE/Pong-v5``).
    :param title: short name, used by name-only prompts ("The task is CartPole").
    :param description: actions, reward, termination and goal, in plain English.
    :param action_labels: one label per discrete action (index order) or continuous dimension.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    env_id: str
    title: str
    description: str
    action_labels: tuple[str, ...]


class _TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    description: str
    action_labels: list[str]


class _TaskFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str
    tasks: dict[str, _TaskEntry]


def load_task_file(path: str | Path) -> list[TaskDescription]:
    """Read one task-description YAML file (``family:`` + ``tasks:`` mapping)."""
    path = Path(path)
    try:
        parsed = _TaskFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        raise PromptError(f"cannot read task descriptions {path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PromptError(f"invalid task descriptions {path}: {problems}") from None
    return [
        TaskDescription(env_id=env_id, title=entry.title, description=entry.description.strip(),
                        action_labels=tuple(entry.action_labels))
        for env_id, entry in parsed.tasks.items()
    ]


def custom_task(env_id: str, text: str, action_labels: tuple[str, ...] = ()) -> TaskDescription:
    """A description given by the user (``--task-description TEXT`` or ``@FILE``)."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PromptError(f"cannot read task description file {path}: {exc.strerror}") from None
    if not text.strip():
        raise PromptError("the task description is empty")
    title = env_id.split(":")[-1].split("/")[-1].rsplit("-v", 1)[0]
    return TaskDescription(env_id=env_id, title=title, description=text.strip(), action_labels=action_labels)
