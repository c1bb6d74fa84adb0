"""The ablation spec: a YAML file naming a base run configuration, arms, environments and seeds.

Example (``examples/ablation-prompts.yaml`` has a complete one)::

    name: prompt-ablation
    base: {algo: dqn, provider: local, prompt_set: paper, steps: 20000}
    arms:
      - name: paper
      - name: name-only
        prompt_set: name-only
      - name: baseline
        provider: none
    baseline: baseline
    environments: [CartPole-v1, {id: Acrobot-v1, max_score: -100}]
    seeds: 5            # or a list: [0, 1, 2, 3, 4]

Every field of ``base`` and of an arm is an option of ``llm-explorer train`` (see
:data:`RunSettings`); an arm's value replaces the base's, ``options`` are merged key by key.
Validation is strict: an unknown key, a wrong type, a duplicate arm name, an unknown provider,
prompt set or environment is a :class:`SpecError` that names the line, the column and the path
of every problem at once, before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import UsageError
from ._yaml import Position, YamlDocument, YamlError, read_yaml
from .preflight import TrainInterface

__all__ = [
    "Arm",
    "Environment",
    "Price",
    "Problem",
    "RunSettings",
    "SpecError",
    "StudySpec",
    "check_names",
    "load_spec",
    "parse_spec",
]

ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
NO_PROVIDER = "none"


# --------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (path in the document, position in the file) and what."""

    path: tuple[str | int, ...]
    message: str
    position: Position | None = None

    def format(self, source: str) -> str:
        where = source
        if self.position is not None:
            where += f":{self.position.line}:{self.position.column}"
        dotted = _dotted(self.path)
        return f"{where}: {dotted + ': ' if dotted else ''}{self.message}"


class SpecError(UsageError):
    """A spec that cannot run. ``problems`` lists every problem found; the CLI exits with 2."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source, self.problems = source, list(problems)
        lines = [p.format(source) for p in self.problems]
        head = f"invalid ablation spec ({len(lines)} problem{'s' if len(lines) != 1 else ''}):"
        super().__init__("\n  ".join([head, *lines]))


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --------------------------------------------------------------------------- models
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


OptionValue = str | int | float | bool


class RunSettings(_Strict):
    """Options of ``llm-explorer train`` that a study's base or an arm can set. ``None`` (left
    out) means the train command's own default."""

    algo: str | None = None
    """``--algo``: the RL algorithm (dqn, ddqn, c51, qrdqn, rainbow, ddpg, td3, sac, ...)."""
    steps: int | None = Field(None, gt=0)
    """``--steps``: env steps per run (default: the algorithm's budget for the environment)."""
    provider: str | None = None
    """``--provider``: a registered provider (``llm-explorer plugins``), or ``none`` for the
    algorithm's own exploration (the usual baseline)."""
    model: str | None = None
    """``--model``: model name or GGUF path for the provider."""
    base_url: str | None = None
    """``--base-url``: endpoint of an OpenAI-compatible server."""
    prompt_set: str | None = None
    """``--prompt-set``: a registered prompt set (paper, name-only, single-stage, shuffled,
    random, frozen, ...)."""
    k: int | None = Field(None, ge=1)
    """``--k``: request an exploration update every K episodes."""
    m: int | None = Field(None, ge=1)
    """``--m``: actions sampled from the episode for the prompt."""
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    """``--temperature``: sampling temperature of the LLM."""
    mode: Literal["async", "blocking"] | None = None
    """``--mode``: non-blocking (``async``) or paper-parity ``blocking`` updates."""
    task_description: str | None = None
    """``--task-description``: text, or ``@FILE`` (relative to the spec file)."""
    eval_episodes: int | None = Field(None, ge=1)
    """``--eval-episodes``: greedy episodes per evaluation."""
    sigma: float | None = Field(None, ge=0.0)
    """``--sigma``: Gaussian exploration noise in normalised action units (DDPG/TD3/SAC)."""
    response_cache: str | None = None
    """``--response-cache``: SQLite response cache (relative to the spec file)."""
    replay: bool | None = None
    """``--replay``: answer only from the response cache."""
    options: dict[str, OptionValue] = Field(default_factory=dict)
    """``--option KEY=VALUE`` provider options (merged key by key: an arm's value wins)."""


class Arm(RunSettings):
    """A named set of overrides of the base settings."""

    name: str
    """Unique; used in directory names (letters, digits, ``.``, ``_``, ``+``, ``-``)."""
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name_is_a_directory_name(cls, value: str) -> str:
        if not ARM_NAME.match(value):
            raise ValueError("must start with a letter or digit and use only letters, digits, '.', '_', '+', '-'")
        return value


class Environment(_Strict):
    """One environment, with the scores that map to 0 and 1 when results are normalised."""

    id: str
    """A gymnasium id (``CartPole-v1``, ``ALE/Pong-v5``, ``module:MyEnv-v0``)."""
    min_score: float | None = None
    """Maps to 0. Default: the baseline arm's mean final return (else the worst run's)."""
    max_score: float | None = None
    """Maps to 1, e.g. the best-known score. Default: the best final return in the study."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value


class Price(_Strict):
    """USD per million tokens."""

    input: float = Field(ge=0.0)
    output: float = Field(ge=0.0)


class StudySpec(_Strict):
    """A whole study. ``source`` is the file it was read from (not part of the YAML)."""

    name: str
    description: str = ""
    base: RunSettings = Field(default_factory=RunSettings)
    arms: list[Arm] = Field(min_length=1)
    environments: list[Environment] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    """Seeds, paired across arms; an integer N means ``0 .. N-1``."""
    baseline: str | None = None
    """The arm others are compared with (probability of improvement, normalisation).
    Default: the arm named ``baseline``, if there is one."""
    prices: dict[str, Price] = Field(default_factory=dict)
    """Token prices by model name (or provider name), for the cost table."""

    @field_validator("seeds", mode="before")
    @classmethod
    def _count_to_list(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError(f"a seed count must be >= 1, got {value}")
            return list(range(value))
        return value

    @field_validator("seeds")
    @classmethod
    def _non_negative(cls, value: list[int]) -> list[int]:
        negative = [s for s in value if s < 0]
        if negative:
            raise ValueError(f"seeds must be >= 0, got {negative}")
        return value

    # ------------------------------------------------------------------ derived
    @property
    def baseline_arm(self) -> str | None:
        if self.baseline is not None:
            return self.baseline
        return "baseline" if any(a.name == "baseline" for a in self.arms) else None

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    def settings(self, arm: Arm | str) -> dict[str, Any]:
        """The arm's resolved settings: base, then the arm's overrides; unset fields left out."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        merged: dict[str, Any] = {}
        for field in RunSettings.model_fields:
            if field == "options":
                continue
            value = getattr(arm, field)
            if value is None:
                value = getattr(self.base, field)
            if value is not None:
                merged[field] = value
        options = {**self.base.options, **arm.options}
        if options:
            merged["options"] = options
        return merged


# --------------------------------------------------------------------------- loading
def load_spec(path: str | Path, *, names: bool = True,
              interface: TrainInterface | Callable[[], TrainInterface] | None = None) -> StudySpec:
    """Read, validate and (with ``names``) check every registered name of the spec at ``path``;
    with ``interface`` (or a function returning it, called once the structure is valid), also
    that the train command accepts every option the spec uses.

    Raises :class:`SpecError` listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read ablation spec {str(path)!r}: {exc.strerror or exc}") from None
    spec, doc = parse_spec(text, source=str(path))
    if names:
        if callable(interface):
            interface = interface()
        check_names(spec, doc, source=str(path), base_dir=path.parent, interface=interface)
    return spec


def parse_spec(text: str, *, source: str = "<spec>") -> tuple[StudySpec, YamlDocument]:
    """Structure and consistency only (no plugin or gymnasium lookups)."""
    try:
        doc = read_yaml(text)
    except YamlError as exc:
        raise SpecError(source, [Problem((), str(exc), exc.position)]) from None
    if not isinstance(doc.data, dict):
        raise SpecError(source, [Problem((), "the spec must be a mapping with keys "
                                             f"{', '.join(StudySpec.model_fields)}", doc.locate(()))])
    try:
        spec = StudySpec.model_validate(doc.data)
    except ValidationError as exc:
        raise SpecError(source, [_problem(err, doc) for err in exc.errors()]) from None
    problems = _consistency(spec)
    if problems:
        raise SpecError(source, [Problem(p.path, p.message, doc.locate(p.path)) for p in problems])
    return spec, doc


_MODEL_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): StudySpec, ("base",): RunSettings, ("arms", "*"): Arm, ("environments", "*"): Environment,
    ("prices", "*"): Price,
}
_WHAT = {StudySpec: "a study", RunSettings: "base", Arm: "an arm", Environment: "an environment",
         Price: "a price"}


def _problem(err: Any, doc: YamlDocument) -> Problem:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = tuple("*" if isinstance(p, int) or (len(loc) > 1 and loc[0] == "prices" and i == 1) else p
                       for i, p in enumerate(loc[:-1]))
        model = _MODEL_AT.get(parent)
        allowed = ", ".join(f for f in model.model_fields) if model else ""
        message = f"unknown field {loc[-1]!r}"
        if model is not None:
            verb = "can override" if model is Arm else "can set"
            message += f"; {_WHAT[model]} {verb}: {allowed}"
        return Problem(loc, message, doc.locate(loc))
    if kind == "missing":
        return Problem(loc, f"missing required field {loc[-1]!r}", doc.locate(loc))
    message = str(err["ctx"]["error"]) if kind == "value_error" and "error" in err.get("ctx", {}) else err["msg"]
    if "input" in err and not isinstance(err["input"], dict | list):
        message += f" (got {err['input']!r})"
    return Problem(loc, message, doc.locate(loc))


def _consistency(spec: StudySpec) -> list[Problem]:
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for i, arm in enumerate(spec.arms):
        if arm.name in first:
            problems.append(Problem(("arms", i, "name"),
                                    f"duplicate arm name {arm.name!r} (also arms[{first[arm.name]}])"))
        else:
            first[arm.name] = i
    env_first: dict[str, int] = {}
    for i, env in enumerate(spec.environments):
        if env.id in env_first:
            problems.append(Problem(("environments", i), f"duplicate environment {env.id!r}"))
        else:
            env_first[env.id] = i
        if env.min_score is not None and env.max_score is not None and env.max_score <= env.min_score:
            problems.append(Problem(("environments", i, "max_score"),
                                    f"max_score ({env.max_score}) must be greater than min_score ({env.min_score})"))
    duplicates = sorted({s for s in spec.seeds if spec.seeds.count(s) > 1})
    if duplicates:
        problems.append(Problem(("seeds",), f"duplicate seeds {duplicates}"))
    if spec.baseline is not None and spec.baseline not in first:
        problems.append(Problem(("baseline",), f"no arm named {spec.baseline!r}; arms: {', '.join(first)}"))
    for i, arm in enumerate(spec.arms):
        settings = spec.settings(arm)
        if "algo" not in settings:
            problems.append(Problem(("arms", i), f"arm {arm.name!r} has no algorithm: set base.algo or arms[{i}].algo"))
        if settings.get("replay") and "response_cache" not in settings:
            problems.append(Problem(("arms", i), f"arm {arm.name!r} sets replay without a response_cache"))
    return problems


# --------------------------------------------------------------------------- names
def check_names(
    spec: StudySpec,
    doc: YamlDocument,
    *,
    source: str = "<spec>",
    base_dir: Path | None = None,
    providers: Iterable[str] | None = None,
    prompt_sets: Iterable[str] | None = None,
    env_exists: Callable[[str], str | None] | None = None,
    interface: TrainInterface | None = None,
) -> None:
    """Check providers and prompt sets against the registered plugins, environments against
    gymnasium's registry, ``@FILE`` task descriptions against the file system and, given the
    train command's ``interface``, options and algorithms against what it accepts. Raises
    :class:`SpecError`. The lookups can be injected (tests)."""
    if providers is None or prompt_sets is None:
        known_providers, known_sets = _registered_names()
        providers = known_providers if providers is None else providers
        prompt_sets = known_sets if prompt_sets is None else prompt_sets
    providers, prompt_sets = {*providers, NO_PROVIDER}, set(prompt_sets)
    env_exists = env_exists or environment_problem
    base_dir = base_dir or Path.cwd()
    problems: list[Problem] = []
    scopes: list[tuple[tuple[str | int, ...], RunSettings]] = [(("base",), spec.base)]
    scopes += [(("arms", i), arm) for i, arm in enumerate(spec.arms)]
    for path, settings in scopes:
        if settings.provider is not None and settings.provider not in providers:
            problems.append(Problem((*path, "provider"), f"unknown provider {settings.provider!r}; "
                                                         f"available: {', '.join(sorted(providers))}"))
        if settings.prompt_set is not None and settings.prompt_set not in prompt_sets:
            problems.append(Problem((*path, "prompt_set"), f"unknown prompt set {settings.prompt_set!r}; "
                                                           f"available: {', '.join(sorted(prompt_sets))}"))
        text = settings.task_description
        if text is not None and text.startswith("@") and not (base_dir / text[1:]).is_file():
            problems.append(Problem((*path, "task_description"),
                                    f"task description file {str(base_dir / text[1:])!r} does not exist"))
        if interface is not None:
            problems += _interface_problems(path, settings, interface)
    for i, env in enumerate(spec.environments):
        message = env_exists(env.id)
        if message:
            problems.append(Problem(("environments", i), message))
    if problems:
        raise SpecError(source, [Problem(p.path, p.message, doc.locate(p.path)) for p in problems])


def _interface_problems(path: tuple[str | int, ...], settings: RunSettings,
                        interface: TrainInterface) -> list[Problem]:
    from .plan import FLAGS

    problems = []
    for name, flag in {**FLAGS, "replay": "--replay", "options": "--option"}.items():
        value = getattr(settings, name)
        if value is not None and value != {} and flag not in interface.flags:
            problems.append(Problem((*path, name), f"the train command has no {flag} option, so {name!r} "
                                                   "cannot be set (see: llm-explorer train --help)"))
    algos = interface.algorithms
    if settings.algo is not None and algos is not None and settings.algo not in algos:
        problems.append(Problem((*path, "algo"), f"unknown algorithm {settings.algo!r}; available: {', '.join(algos)}"))
    return problems


def _registered_names() -> tuple[list[str], list[str]]:
    """Providers and prompt sets of the installed plugins (the Tianshou plugin is not needed)."""
    from ..plugins import make_plugin_manager
    from ..session import Catalogues

    catalogues = Catalogues(make_plugin_manager(blocked=("tianshou",)))
    return list(catalogues.providers.names()), list(catalogues.prompt_sets.names())


def environment_problem(env_id: str) -> str | None:
    """None when gymnasium knows ``env_id``, else a one-line reason. ``module:Env`` ids only need
    an importable module (importing it could be costly, so it is not imported here)."""
    import importlib.util

    if ":" in env_id:
        module = env_id.split(":", 1)[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        return None if found else f"environment {env_id!r}: module {module!r} cannot be imported"
    import gymnasium

    if "/" in env_id:
        _register_namespace(env_id.split("/", 1)[0])
    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as exc:
        return f"unknown environment {env_id!r}: {exc}"
    return None


def _register_namespace(namespace: str) -> None:
    """gymnasium >= 1.0 registers Atari ids only after ``gym.register_envs(ale_py)``."""
    if namespace != "ALE":
        return
    try:
        import ale_py
        import gymnasium

        gymnasium.register_envs(ale_py)
    except ImportError:
        pass
