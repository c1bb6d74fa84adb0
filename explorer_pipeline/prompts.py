"""Prompt sets as validated data.

A prompt set is one YAML file: the templates of one prompt design (system + user message per
stage), which task description it shows the model, and an optional control arm. Templates use
``$name`` placeholders (``string.Template``), so JSON braces stay literal. Variables are strict:
a template that uses a variable its stage does not provide, or omits one its stage requires,
fails when the set is loaded, not at episode 300.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import PromptError
from .yamlio import YamlError, read_yaml

#: Variables the summariser provides to every stage.
EPISODE_VARIABLES = frozenset({
    "task_title", "task_description", "episode_index", "episode_return", "episode_length",
    "sampled_actions", "num_sampled", "action_histogram", "recent_returns", "return_trend",
    "n_actions", "action_list",
})
STAGE_VARIABLES: dict[str, frozenset[str]] = {
    "analysis": EPISODE_VARIABLES,
    "proposal": EPISODE_VARIABLES | {"analysis", "output_format"},
}
#: Variables a template of the stage must use; without them the stage cannot do its job.
REQUIRED: dict[tuple[str, bool], frozenset[str]] = {
    ("analysis", True): frozenset({"episode_return", "sampled_actions"}),
    ("proposal", True): frozenset({"analysis", "output_format"}),   # two-stage proposal
    ("proposal", False): frozenset({"episode_return", "sampled_actions", "output_format"}),
}

Control = Literal["shuffled", "random", "frozen"]


class MessageTemplate(BaseModel):
    """A system message and a user message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    system: str
    user: str

    def identifiers(self) -> set[str]:
        """The ``$variables`` both messages use; ValueError on a malformed ``$`` placeholder."""
        ids: set[str] = set()
        for text in (self.system, self.user):
            template = string.Template(text)
            if not template.is_valid():
                raise ValueError(f"invalid '$' placeholder in template text: {text[:60]!r}… (write $$ for a literal $)")
            ids.update(template.get_identifiers())
        return ids

    def render(self, variables: Mapping[str, object]) -> list[tuple[str, str]]:
        """``[("system", text), ("human", text)]``; a missing variable raises :class:`PromptError`."""
        try:
            return [
                ("system", string.Template(self.system).substitute(variables)),
                ("human", string.Template(self.user).substitute(variables)),
            ]
        except KeyError as exc:
            raise PromptError(f"prompt variable {exc.args[0]!r} was not provided") from None


class PromptSet(BaseModel):
    """One prompt design.

    :param id: the name users pass as ``--prompt-set``.
    :param task_view: ``full`` shows the whole task description; ``name`` only the task's title.
    :param analysis: stage-1 templates (learning-status summary); ``None`` for single-stage sets.
    :param distribution: stage-2 templates for discrete action spaces.
    :param bias: stage-2 templates for continuous action spaces.
    :param control: a control arm: ``shuffled`` permutes the LLM's answer, ``random`` replaces the
        LLM by an entropy-matched random distribution, ``frozen`` keeps the first answer.
    :param options: control-arm settings (``target_entropy``: fraction of the maximum entropy for
        ``random``; ``bias_scale`` for random biases).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    version: int = 1
    description: str
    task_view: Literal["full", "name"] = "full"
    analysis: MessageTemplate | None = None
    distribution: MessageTemplate | None = None
    bias: MessageTemplate | None = None
    control: Control | None = None
    options: dict[str, float] = {}

    @model_validator(mode="after")
    def _check_variables(self) -> PromptSet:
        unknown_options = set(self.options) - {"target_entropy", "bias_scale"}
        if unknown_options:
            raise ValueError(f"unknown option(s) {sorted(unknown_options)}; allowed: bias_scale, target_entropy")
        if not 0.0 <= self.options.get("target_entropy", 0.8) <= 1.0:
            raise ValueError(f"options.target_entropy must be in [0, 1], got {self.options['target_entropy']}")
        if not 0.0 < self.options.get("bias_scale", 0.2) <= 1.0:
            raise ValueError(f"options.bias_scale must be in (0, 1], got {self.options['bias_scale']}")
        if self.control == "random":
            return self  # no LLM call, templates optional
        if self.distribution is None and self.bias is None:
            raise ValueError("needs a 'distribution' or a 'bias' template (or control: random)")
        two_stage = self.analysis is not None
        stages = [("analysis", self.analysis)] if two_stage else []
        stages += [("proposal", self.distribution), ("proposal", self.bias)]
        for stage, template in stages:
            if template is None:
                continue
            used = template.identifiers()
            unknown = used - STAGE_VARIABLES[stage]
            if not two_stage:
                unknown |= used & {"analysis"}
            if unknown:
                raise ValueError(
                    f"{stage} template uses unknown variable(s) {sorted(unknown)}; "
                    f"allowed: {sorted(STAGE_VARIABLES[stage] - ({'analysis'} if not two_stage else set()))}"
                )
            missing = REQUIRED[(stage, two_stage)] - used
            if missing:
                raise ValueError(f"{stage} template must use variable(s) {sorted(missing)}")
        return self

    @property
    def two_stage(self) -> bool:
        """The set has a stage-1 (analysis) template."""
        return self.analysis is not None

    @property
    def calls_llm(self) -> bool:
        """Every set but the ``random`` control asks the model."""
        return self.control != "random"

    def proposal_for(self, kind: str) -> MessageTemplate:
        """The stage-2 template for ``kind`` (``distribution`` or ``bias``); PromptError if the set has none."""
        template = self.distribution if kind == "distribution" else self.bias
        if template is None:
            raise PromptError(f"prompt set {self.id!r} has no {kind!r} template")
        return template

    def template_hash(self) -> str:
        """sha256 (first 16 hex digits) of the set's content: recorded in every update's provenance."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _read_yaml(path: Path) -> dict[str, Any]:
    """The prompt-set file as a mapping, read strictly (:func:`~explorer_pipeline.yamlio.read_yaml`:
    a duplicate key is an error naming ``file:line:column``, not a silently dropped template)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"cannot read prompt set {path}: {exc.strerror or exc}") from None
    try:
        data = read_yaml(text).data
    except YamlError as exc:
        raise PromptError(f"cannot read prompt set {exc.where(path)}: {exc}") from None
    if not isinstance(data, dict):
        raise PromptError(f"prompt set {path} must be a YAML mapping")
    return data


def load_prompt_set(path: str | Path) -> PromptSet:
    """Read and validate one prompt-set YAML file. Errors name the file and the problem.

    ``extends: NAME`` starts from ``NAME.yaml`` in the same folder; the file's own keys override.
    """
    path = Path(path)
    data = _read_yaml(path)
    seen = {path.stem}
    while "extends" in data:
        parent = str(data.pop("extends"))
        if parent in seen:
            raise PromptError(f"prompt set {path}: 'extends' forms a cycle through {parent!r}")
        seen.add(parent)
        data = {**_read_yaml(path.with_name(f"{parent}.yaml")), **data}
    try:
        return PromptSet.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'set'}: {e['msg']}" for e in exc.errors())
        raise PromptError(f"invalid prompt set {path}: {problems}") from None
