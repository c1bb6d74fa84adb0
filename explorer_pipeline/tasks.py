"""Task descriptions: what the model is told about an environment, as data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import PromptError
from .yamlio import YamlDocument, YamlError, read_yaml


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
    """Read one task-description YAML file (``family:`` + ``tasks:`` mapping).

    The file is read strictly (:func:`~explorer_pipeline.yamlio.read_yaml`): a duplicate key, such
    as one environment described twice, is a :class:`PromptError` naming ``file:line:column``;
    so is every validation problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"cannot read task descriptions {path}: {exc.strerror or exc}") from None
    try:
        doc = read_yaml(text)
    except YamlError as exc:
        raise PromptError(f"cannot read task descriptions {exc.where(path)}: {exc}") from None
    try:
        parsed = _TaskFile.model_validate(doc.data)
    except ValidationError as exc:
        problems = "; ".join(_located(path, doc, e) for e in exc.errors())
        raise PromptError(f"invalid task descriptions: {problems}") from None
    return [
        TaskDescription(env_id=env_id, title=entry.title, description=entry.description.strip(),
                        action_labels=tuple(entry.action_labels))
        for env_id, entry in parsed.tasks.items()
    ]


def _located(path: Path, doc: YamlDocument, error: Any) -> str:
    """One validation problem as ``file:line:column: key.path: message``."""
    loc = tuple(error["loc"])
    position = doc.locate(loc)
    where = f"{path}:{position.line}:{position.column}" if position is not None else str(path)
    return f"{where}: {'.'.join(map(str, loc)) or 'file'}: {error['msg']}"


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
