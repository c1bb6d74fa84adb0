"""The ablation spec: a YAML file naming a base run configuration, arms, environments and seeds.

Example (``examples/ablation-prompts.yaml`` has a complete one)::

    name: prompt-ablation
    base: {algo: dqn, provider: local, prompt_set: paper, steps: 20000}
    arms:
      - name: paper
      - name: name-only
        prompt_set: name-only
      - name: multiplicative-eps        # a hyperparameter arm: any run-configuration key
        config:
          algorithm: {lr: 1.0e-4, epsilon: {schedule: multiplicative, factor: 0.9999}}
      - name: baseline
        provider: none
    baseline: baseline
    environments: [CartPole-v1, {id: Acrobot-v1, max_score: -100}]
    seeds: 5            # or a list: [0, 1, 2, 3, 4]

``base`` and every arm are :class:`RunSettings`: shortcut fields named like the options of
``llm-explorer train`` (``algo``, ``steps``, ``provider``, ``k``, ``m``, ...), a ``preset``
(``default`` or ``paper``) and ``config``, a partial *run configuration* with the nested keys of
``tianshou_integration.config.RunConfig`` (``algorithm.lr``, ``algorithm.epsilon.schedule``,
``network.hidden_sizes``, ``explorer.max_attempts`` ...; ``llm-explorer train --show-config``
prints them all). Each run receives one configuration document (:func:`run_document`), built in
this order, a later value replacing an earlier one key by key (a deep merge):

1. ``env`` and ``seed`` of the run (they come only from ``environments`` and ``seeds``);
2. the base's shortcut fields, mapped as ``llm-explorer train`` maps its flags
   (:data:`SHORTCUTS`: ``k`` -> ``explorer.every_k``, ``options`` -> ``explorer.provider_options``,
   ``sigma`` -> ``algorithm.noise.sigma`` ...), then the base's ``config``;
3. the arm's shortcut fields, then the arm's ``config``.

So an arm's value wins over the base's, and within one of them ``config`` wins over a shortcut.

Validation is strict: an unknown key, a wrong type, a duplicate arm name, an unknown provider,
prompt set or environment is a :class:`SpecError` that names the line, the column and the path
of every problem at once, before anything runs. :func:`load_spec` with ``names`` (the default)
also resolves every arm x environment configuration with the train command's own resolver, so a
key ``RunConfig`` does not have, a value out of range or a discrete algorithm on a continuous
environment is reported at the spec line that set it.
"""

from __future__ import annotations

import copy
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from explorer_pipeline.budget import Price as RunPrice
from explorer_pipeline.config import SettingInfo
from explorer_pipeline.config import settings as declared_settings
from explorer_pipeline.errors import UsageError
from explorer_pipeline.yamlio import Position, YamlDocument, YamlError, read_yaml
from tianshou_integration.config import RunConfig  # the settings' declarations: pydantic and PyYAML only

from .endpoint import EmbeddedServer, Endpoint, StudyBudget

__all__ = [
    "SHORTCUTS",
    "Arm",
    "Environment",
    "Price",
    "Problem",
    "Resources",
    "RunDocument",
    "RunSettings",
    "Runtime",
    "SpecError",
    "StudySpec",
    "check_names",
    "config_problems",
    "load_spec",
    "parse_spec",
    "run_document",
    "shortcut_model",
]

ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
NO_PROVIDER = "none"
#: The provider structural validation assumes when a document sets none: ``llm-explorer train``
#: adds its own default (``local`` or ``scripted``), and every provider passes the same checks.
VALIDATION_PROVIDER = "scripted"

#: ``resolve`` starts some messages with the configuration key (``algo: dqn needs ...``); the
#: spec path in front of a problem already names it.
_KEY_PREFIX = re.compile(r"^[a-z_][a-z0-9_.]*: ")
#: Keys of the document that come from the study itself, never from a base or an arm.
RUN_KEYS = ("env", "seed")


# --------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (path in the document, position in the file) and what."""

    path: tuple[str | int, ...]
    message: str
    position: Position | None = None

    def format(self, source: str) -> str:
        """``SOURCE:LINE:COL: dotted.path: message``."""
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


def _shortcut_type(info: SettingInfo) -> Any:
    """The spec field's type: the setting's own, with its bounds, or None (unset). A path is text
    (relative to the spec file); a mapping takes text, numbers and booleans, as YAML writes them."""
    kind = info.value_type
    if kind is Path:
        kind = str
    if typing.get_origin(kind) is dict:
        return dict[str, OptionValue]
    optional = typing.Optional[kind]  # noqa: UP045 (kind is a runtime value)
    return Annotated[optional, *info.constraints] if info.constraints else optional


def _shortcut_field(info: SettingInfo) -> tuple[Any, Any]:
    flag = f"``{info.setting.flag}`` (``{info.key}``)" if info.setting.flag else f"``{info.key}``"
    text = f"{flag}: {info.field.description or ''}"
    if typing.get_origin(info.value_type) is dict:
        return _shortcut_type(info), Field(default_factory=dict, description=text)
    return _shortcut_type(info), Field(None, description=text)


def shortcut_model(config: type[BaseModel],
                   name: str = "Shortcuts") -> tuple[type[_Strict], dict[str, tuple[str, ...]]]:
    """The spec's shortcut fields of run-configuration model ``config`` (a strict model whose
    fields are the settings that declare a ``Setting(shortcut=...)``) and the shortcut -> key
    path map."""
    found = [info for info in declared_settings(config) if info.setting.shortcut]
    model = create_model(name, __base__=_Strict, __module__=__name__,
                         **{str(info.setting.shortcut): _shortcut_field(info) for info in found})
    return model, {str(info.setting.shortcut): info.path for info in found}


_Shortcuts, SHORTCUTS = shortcut_model(RunConfig, "_Shortcuts")
"""spec field -> key path in the run configuration: generated from the run configuration's
declarations (each field's ``Setting(shortcut=...)``), as ``llm-explorer train``'s flags are."""


class RunSettings(_Shortcuts):
    """What a study's base or an arm sets. The shortcut fields (:data:`SHORTCUTS`: ``algo``,
    ``steps``, ``provider``, ``k``, ``m``, ``options`` ...) are generated from the run
    configuration's settings: named as declared there (after the options of ``llm-explorer
    train``), with the setting's type and bounds, mapped to its key path. ``config`` reaches any
    other key. ``None`` (left out) means unset: the train command's default, or the preset's
    value. A mapping (``options``) is merged key by key over the base's (an arm's value wins)."""

    config: dict[str, Any] = Field(default_factory=dict)
    """A partial run configuration with ``RunConfig``'s nested keys, e.g.
    ``{algorithm: {lr: 1.0e-4, epsilon: {schedule: multiplicative}}, network: {hidden_sizes: [64, 64]}}``.
    Deep-merged over the shortcut fields of the same base or arm (``config`` wins), and an arm's
    over the base's (an arm's leaf wins). ``env`` and ``seed`` come from the study and cannot be
    set here. Checked against ``RunConfig`` when the spec is loaded."""


ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Resources(_Strict):
    """What one run asks the cluster for (``resources:`` of the study or of an arm; an arm's
    field wins). The local backend uses only ``num_cpus`` (threads per run)."""

    num_cpus: float | None = Field(None, gt=0)
    """CPUs per run (Ray's ``num_cpus``; default: ``--cpus-per-run``). Threads are this, rounded up."""
    num_gpus: float | None = Field(None, ge=0)
    """GPUs per run (Ray's ``num_gpus``): a fraction below 1 shares a GPU (0.5: two runs per
    GPU), above 1 a whole number. With ``device: auto`` a run uses exactly the GPU(s) Ray
    assigned; with 0 (the default) it sees none."""
    memory_gb: float | None = Field(None, gt=0)
    """Memory per run in GiB (Ray's ``memory``, a scheduling reservation)."""

    @field_validator("num_gpus")
    @classmethod
    def _whole_above_one(cls, value: float | None) -> float | None:
        if value is not None and value > 1 and value != int(value):
            raise ValueError(f"more than one GPU must be a whole number (Ray shares only a single GPU), got {value}")
        return value


class Runtime(_Strict):
    """Where and how runs execute on a cluster (``runtime:``); the Ray backend reads it."""

    env_vars: list[str] = Field(default_factory=list)
    """Names of environment variables passed from the driver to every run (API keys,
    ``LLM_EXPLORER_*``): values are read from the driver's environment when the study starts
    and never written to disk. A name the driver has no value for is an error."""
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    """Ray's ``runtime_env`` for every run and the preflight (``working_dir``, ``pip``,
    ``image_uri``, ``env_vars`` for values that are not secrets, ...)."""
    max_retries: int = Field(3, ge=0)
    """Times a lost run (node or worker died, train killed by a signal) is retried, each time
    from its newest checkpoint."""
    preflight: bool = True
    """Before any run: a task on every node checks it imports the project and reads the study
    directory (a marker the driver wrote), and, with ``check_gpus``, sees its GPUs."""
    check_gpus: bool = True
    """In the preflight, when runs ask for GPUs: a node that declares GPUs must show them to
    torch (``torch.cuda.device_count()``)."""
    heartbeat_s: float = Field(30.0, gt=0)
    """Seconds between two heartbeats of a running run (env step, steps/s, updates, LLM failures)."""

    @field_validator("env_vars")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        bad = [i for i, name in enumerate(value) if not ENV_VAR_NAME.match(name)]
        if bad:  # the entries themselves are not repeated: one may be a secret pasted by mistake
            raise ValueError(f"entries {bad} are not environment variable names (letters, digits, '_'); "
                             "list names only, the values are read from the driver's environment")
        return value


class Arm(RunSettings):
    """A named set of overrides of the base settings."""

    name: str
    """Unique; used in directory names (letters, digits, ``.``, ``_``, ``+``, ``-``)."""
    description: str = ""
    resources: Resources | None = None
    """This arm's runs ask for these resources (each field given wins over the study's)."""

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
    """Maps to 0. Default: the baseline arm's mean (else the worst run's) on the report's metric
    (the final greedy return unless ``metric`` says otherwise)."""
    max_score: float | None = None
    """Maps to 1, e.g. the best-known score. Default: the best run in the study on the report's metric."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value


class Price(RunPrice):
    """USD per million tokens: the run budget's price, read as strictly as the rest of the spec."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


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
    metric: Literal["final", "auc", "train"] = "final"
    """What the report compares arms on (:mod:`.metrics`): the final greedy return (``final``),
    the greedy return averaged over training (``auc``) or the mean training-episode return
    (``train``). ``llm-explorer report --metric`` overrides it."""
    resources: Resources = Field(default_factory=Resources)
    """What each run asks the cluster for (an arm's ``resources`` override it field by field)."""
    runtime: Runtime = Field(default_factory=Runtime)
    """How runs execute on a Ray cluster: ``runtime_env``, environment variables passed by name,
    retries, the preflight, heartbeats."""
    endpoint: Endpoint | None = None
    """One LLM endpoint for the whole study (:mod:`.endpoint`): ``embedded: {slots, threads, model}``
    starts one llama.cpp server that the ``local`` arms share, ``url`` + ``max_concurrent`` points
    the ``openai`` arms at one server with a limit across runs."""
    budget: StudyBudget | None = None
    """What all LLM runs of the study may spend together (``max_tokens``, ``max_cost_usd``): a
    ledger in the study directory that every LLM run charges."""

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
        """The arm others are compared with: ``baseline``, else the arm named ``baseline``, if any."""
        if self.baseline is not None:
            return self.baseline
        return "baseline" if any(a.name == "baseline" for a in self.arms) else None

    def arm(self, name: str) -> Arm:
        """The arm named ``name``; KeyError if there is none."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    def settings(self, arm: Arm | str) -> dict[str, Any]:
        """The arm's shortcut fields over the base's (a mapping such as ``options`` merged key by
        key); unset fields and ``config`` left out. :func:`run_document` gives the whole configuration."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        merged: dict[str, Any] = {}
        mappings: dict[str, Any] = {}
        for name in SHORTCUTS:
            value, base = getattr(arm, name), getattr(self.base, name)
            if isinstance(value, dict):
                if base or value:
                    mappings[name] = {**base, **value}
                continue
            if value is None:
                value = base
            if value is not None:
                merged[name] = value
        return {**merged, **mappings}

    def resources_of(self, arm: Arm | str) -> Resources:
        """The resources one run of ``arm`` asks for: the arm's fields over the study's."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        if arm.resources is None:
            return self.resources
        return self.resources.model_copy(update=arm.resources.model_dump(exclude_none=True))

    def scopes(self, arm: Arm) -> list[tuple[tuple[str | int, ...], RunSettings]]:
        """Where ``arm``'s run configuration comes from, lowest priority first: the base, then
        the arm, each with its path in the spec."""
        return [(("base",), self.base), (("arms", self.arms.index(arm)), arm)]


# --------------------------------------------------------------------------- run documents
@dataclass
class RunDocument:
    """One run's configuration document and, for every key path in it, the spec path that set
    it (``("arms", 2, "config", "algorithm", "lr")``, ``("base", "k")``, ``("environments", 0)``)."""

    data: dict[str, Any]
    origins: dict[tuple[str, ...], tuple[str | int, ...]] = field(default_factory=dict)

    def set(self, path: Sequence[str], value: Any, origin: tuple[str | int, ...]) -> None:
        """Set ``path`` to ``value`` (creating mappings on the way), set by spec path ``origin``.
        When ``origin`` spells the same keys (a ``config`` value), the mappings on the way are
        attributed to the matching part of it too, so an unknown section can be located."""
        path = tuple(path)
        spelled = len(origin) > len(path) and tuple(origin[-len(path):]) == path
        node = self.data
        for depth in range(1, len(path)):
            child = node.get(path[depth - 1])
            if not isinstance(child, dict):
                child = node[path[depth - 1]] = {}
            node = child
            if spelled:
                self.origins[path[:depth]] = origin[:len(origin) - len(path) + depth]
        node[path[-1]] = copy.deepcopy(value)
        self.origins[path] = origin

    def get(self, path: Sequence[str]) -> Any:
        """The value at key path ``path``; None where the path does not exist."""
        node: Any = self.data
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def _config_leaves(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(key path, value)`` for every non-mapping value of a nested mapping (an empty mapping
    sets nothing)."""
    for key, value in data.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            yield from _config_leaves(value, path)
        else:
            yield path, value


def _scope_values(scope: tuple[str | int, ...], settings: RunSettings
                  ) -> Iterator[tuple[tuple[str, ...], Any, tuple[str | int, ...]]]:
    """``(key path, value, spec path)`` that one base or arm sets: shortcuts, then ``config``."""
    for name, path in SHORTCUTS.items():
        value = getattr(settings, name)
        if isinstance(value, dict):  # a mapping (``options``): key by key
            for key, option in value.items():
                yield (*path, key), option, (*scope, name, key)
        elif value is not None:
            yield path, value, (*scope, name)
    for path, value in _config_leaves(settings.config):
        yield path, value, (*scope, "config", *path)


def run_document(spec: StudySpec, arm: Arm | str, env: int | str, seed: int,
                 base_dir: Path | None = None) -> RunDocument:
    """The run configuration of ``arm`` on environment ``env`` (index or id) with ``seed``, as
    ``llm-explorer train --config`` reads it. With ``base_dir`` (the spec file's directory),
    ``explorer.response_cache`` and ``@FILE`` task descriptions are made absolute against it."""
    arm = spec.arm(arm) if isinstance(arm, str) else arm
    index = env if isinstance(env, int) else [e.id for e in spec.environments].index(env)
    doc = RunDocument({})
    doc.set(("env",), spec.environments[index].id, ("environments", index))
    doc.set(("seed",), seed, ("seeds",))
    for scope, settings in spec.scopes(arm):
        for path, value, origin in _scope_values(scope, settings):
            if path[0] not in RUN_KEYS:
                doc.set(path, value, origin)
    if base_dir is not None:
        base_dir = base_dir.resolve()
        cache = doc.get(("explorer", "response_cache"))
        if isinstance(cache, str) and cache:
            doc.set(("explorer", "response_cache"), str((base_dir / cache).resolve()),
                    doc.origins[("explorer", "response_cache")])
        text = doc.get(("explorer", "task_description"))
        if isinstance(text, str) and text.startswith("@"):
            doc.set(("explorer", "task_description"), "@" + str((base_dir / text[1:]).resolve()),
                    doc.origins[("explorer", "task_description")])
    return doc


# --------------------------------------------------------------------------- loading
def load_spec(path: str | Path, *, names: bool = True) -> StudySpec:
    """Read and validate the spec at ``path``; with ``names``, also check every registered name
    and resolve every arm x environment run configuration (:func:`check_names`).

    Raises :class:`SpecError` listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read ablation spec {str(path)!r}: {exc.strerror or exc}") from None
    spec, doc = parse_spec(text, source=str(path))
    if names:
        check_names(spec, doc, source=str(path), base_dir=path.parent)
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
    ("prices", "*"): Price, ("resources",): Resources, ("arms", "*", "resources"): Resources,
    ("runtime",): Runtime,
    ("endpoint",): Endpoint, ("endpoint", "embedded"): EmbeddedServer, ("budget",): StudyBudget,
}
_WHAT = {StudySpec: "a study", RunSettings: "base", Arm: "an arm", Environment: "an environment",
         Price: "a price", Resources: "resources", Runtime: "runtime",
         Endpoint: "endpoint", EmbeddedServer: "endpoint.embedded", StudyBudget: "budget"}


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
    for scope, settings in [(("base",), spec.base), *((("arms", i), arm) for i, arm in enumerate(spec.arms))]:
        for key in RUN_KEYS:
            if key in settings.config:
                problems.append(Problem((*scope, "config", key), f"{key} cannot be set here: every run's {key} "
                                        f"comes from the study's {'environments' if key == 'env' else 'seeds'}"))
    for i, arm in enumerate(spec.arms):
        document = run_document(spec, arm, 0, spec.seeds[0])
        if document.get(("algo",)) is None:
            problems.append(Problem(("arms", i), f"arm {arm.name!r} has no algorithm: set base.algo or arms[{i}].algo"))
        if document.get(("explorer", "replay")) is True and not document.get(("explorer", "response_cache")):
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
    configs: bool = True,
) -> None:
    """Check providers and prompt sets against the registered plugins, environments against
    gymnasium's registry, ``@FILE`` task descriptions against the file system and, with
    ``configs``, every arm x environment run configuration against the train command's resolver
    (:func:`config_problems`). Raises :class:`SpecError`. The lookups can be injected (tests)."""
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
    for scope, settings in scopes:
        for value, path in _named(scope, settings, "provider"):
            if value not in providers:
                problems.append(Problem(path, f"unknown provider {value!r}; available: {', '.join(sorted(providers))}"))
        for value, path in _named(scope, settings, "prompt_set"):
            if value not in prompt_sets:
                problems.append(Problem(path, f"unknown prompt set {value!r}; "
                                              f"available: {', '.join(sorted(prompt_sets))}"))
        for value, path in _named(scope, settings, "task_description"):
            if value.startswith("@") and not (base_dir / value[1:]).is_file():
                problems.append(Problem(path, f"task description file {str(base_dir / value[1:])!r} does not exist"))
    missing_envs = set()
    for i, env in enumerate(spec.environments):
        message = env_exists(env.id)
        if message:
            missing_envs.add(env.id)
            problems.append(Problem(("environments", i), message))
    if configs:
        problems += config_problems(spec, base_dir=base_dir, skip=missing_envs)
    if problems:
        raise SpecError(source, [Problem(p.path, p.message, doc.locate(p.path)) for p in problems])


def _named(scope: tuple[str | int, ...], settings: RunSettings,
           name: str) -> Iterator[tuple[str, tuple[str | int, ...]]]:
    """The text values a base or arm gives a named explorer setting (shortcut field and
    ``config.explorer``), with their spec paths."""
    value = getattr(settings, name)
    if isinstance(value, str):
        yield value, (*scope, name)
    explorer = settings.config.get("explorer")
    if isinstance(explorer, Mapping) and isinstance(explorer.get(name), str):
        yield explorer[name], (*scope, "config", "explorer", name)


def config_problems(spec: StudySpec, *, base_dir: Path | None = None, skip: Iterable[str] = (),
                    resolve: Callable[..., Any] | None = None) -> list[Problem]:
    """Resolve every arm x environment run configuration as ``llm-explorer train --config``
    would (``tianshou_integration.config.resolve``: unknown keys, types, ranges, presets, the
    algorithm against the environment's action space) and turn each problem into a
    :class:`Problem` at the spec path that set the offending value (else at the arm), naming
    the arm and the environment. Environments in ``skip`` (already reported) are left out.
    Problems shared by several arms or environments are reported once."""
    from tianshou_integration.config import ConfigError  # lazy: outside the core package

    if resolve is None:
        from tianshou_integration.config import resolve
    describe = _cached_describe()
    skip = set(skip)
    found: dict[tuple[tuple[str | int, ...], str], tuple[list[str], list[str]]] = {}
    for i, arm in enumerate(spec.arms):
        for j, env in enumerate(spec.environments):
            if env.id in skip:
                continue
            document = run_document(spec, arm, j, spec.seeds[0], base_dir)
            overrides, tokens = _as_overrides(document)
            try:
                resolve(overrides=overrides, describe=describe)
            except ConfigError as exc:
                for text in exc.problems:
                    path, message = _locate(text, tokens, ("arms", i))
                    arms, envs = found.setdefault((path, message), ([], []))
                    if arm.name not in arms:
                        arms.append(arm.name)
                    if env.id not in envs:
                        envs.append(env.id)
    return [Problem(path, f"{message} ({_who(arms, envs)})") for (path, message), (arms, envs) in found.items()]


def _as_overrides(document: RunDocument) -> tuple[list[tuple[tuple[str, ...], Any, str]], dict[str, tuple]]:
    """The document as ``resolve`` overrides whose origin is the dotted spec path that set each
    value (mappings with a known origin first, so a problem found at a mapping is located too),
    and the origins back to spec paths. Without a provider, the validation provider is added."""
    overrides: list[tuple[tuple[str, ...], Any, str]] = []
    tokens: dict[str, tuple] = {}

    def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            path = (*prefix, key)
            origin = document.origins.get(path)
            token = _dotted(origin) if origin else ""
            if origin:
                tokens[token] = origin
            if isinstance(value, Mapping):
                if origin:
                    overrides.append((path, copy.deepcopy(dict(value)), token))
                walk(value, path)
            else:
                overrides.append((path, copy.deepcopy(value), token))

    walk(document.data, ())
    if document.get(("explorer", "provider")) is None:
        overrides.insert(0, (("explorer", "provider"), VALIDATION_PROVIDER, "the default provider"))
    return overrides, tokens


def _locate(text: str, tokens: Mapping[str, tuple], fallback: tuple[str | int, ...]
            ) -> tuple[tuple[str | int, ...], str]:
    """Split ``resolve``'s ``"ORIGIN: message"`` into the origin's spec path and the message."""
    path = fallback
    for token in sorted(tokens, key=len, reverse=True):
        if token and text.startswith(token + ": "):
            path, text = tokens[token], text[len(token) + 2:]
            break
    else:
        text = text.removeprefix("the default provider: ")
    return path, _KEY_PREFIX.sub("", text, count=1)


def _who(arms: Sequence[str], envs: Sequence[str]) -> str:
    names = ", ".join(repr(a) for a in arms)
    return f"arm{'s' if len(arms) > 1 else ''} {names} on {', '.join(envs)}"


def _cached_describe() -> Callable[[str], Any]:
    """``tianshou_integration.envs.describe_env``, made once per environment id; anything an
    environment raises while being made becomes a :class:`UsageError`."""
    cache: dict[str, Any] = {}

    def describe(env_id: str) -> Any:
        if env_id not in cache:
            from tianshou_integration.envs import describe_env

            try:
                cache[env_id] = describe_env(env_id)
            except UsageError as exc:
                cache[env_id] = str(exc)
            except Exception as exc:  # an environment that cannot be made: one line, not a traceback
                cache[env_id] = f"environment {env_id!r} cannot be made: {type(exc).__name__}: {exc}"
        value = cache[env_id]
        if isinstance(value, str):
            raise UsageError(value)
        return value

    return describe


def _registered_names() -> tuple[list[str], list[str]]:
    """Providers and prompt sets of the installed plugins (the Tianshou plugin is not needed)."""
    from explorer_pipeline.plugins import make_plugin_manager
    from explorer_pipeline.session import Catalogues

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
