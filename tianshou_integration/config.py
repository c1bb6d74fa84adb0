"""The run configuration: one validated, frozen model that describes a whole training run.

Everything ``llm-explorer train`` needs lives here — environment, algorithm and every
hyperparameter, evaluation, Atari preprocessing, device, and the ``explorer`` section (the LLM
side, :class:`explorer_pipeline.config.ExplorerConfig`). The command line, the Python API and
ablation arms all produce this one object; the run directory stores it resolved
(``config.yaml``), and passing that file back to ``--config`` reruns the same run.

Each setting is declared once, as a field below: type, bounds, docstring (its help) and, where it
has one, a :class:`~explorer_pipeline.config.Setting` in ``Annotated`` metadata naming its
``llm-explorer train`` flag and its ablation-spec shortcut. The flags and the spec's shortcut
fields are generated from those fields; a new setting is one new field.

Resolution (:func:`resolve`), lowest priority first:

1. the model's own defaults;
2. the preset (``default`` or ``paper``, data in ``presets/*.yaml``) for the env family and
   algorithm;
3. the ``--config`` file;
4. the command line's shortcut flags (``--steps``, ``--k`` ...);
5. ``--set dotted.key=value``, in the order given.

Units: steps are env (agent) steps; σ and the LLM bias are in normalised action units, where the
action range maps to ``[-1, 1]`` (1 = half the range) unless ``algorithm.noise.units`` is ``env``.

Importing this module is cheap: pydantic and PyYAML only (gymnasium loads in :func:`resolve`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from explorer_pipeline.config import ExplorerConfig, Setting
from explorer_pipeline.errors import UsageError
from explorer_pipeline.yamlio import YamlDocument, YamlError, read_yaml

from .names import ALGORITHMS, CONTINUOUS_ALGOS, DISCRETE_ALGOS, PRESETS

__all__ = [
    "PRESETS",
    "AlgorithmConfig",
    "AtariConfig",
    "CheckpointConfig",
    "ConfigError",
    "CurlConfig",
    "EpsilonConfig",
    "EvalConfig",
    "ICMConfig",
    "NetworkConfig",
    "NoiseConfig",
    "PrioritizedConfig",
    "RNDConfig",
    "RunConfig",
    "dump_config",
    "load_config_file",
    "make_config",
    "preset_values",
    "resolve",
]


MUJOCO_FAMILIES = frozenset({
    "Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedDoublePendulum",
    "InvertedPendulum", "Pusher", "Reacher", "Swimmer", "Walker2d",
})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True)


# --------------------------------------------------------------------------- sections
class EpsilonConfig(_Section):
    """ε-greedy schedule of the DQN family (when it explores, the LLM's distribution is drawn)."""

    schedule: Literal["linear", "multiplicative"] = "linear"
    """``linear``: from ``start`` to ``end`` over ``decay_steps``; ``multiplicative``:
    ``max(end, start * factor ** step)`` (the paper's)."""
    start: float = Field(1.0, ge=0.0, le=1.0)
    """ε at env step 0."""
    end: float = Field(0.05, ge=0.0, le=1.0)
    """Final ε (linear) or floor (multiplicative)."""
    decay_steps: int = Field(10_000, ge=1)
    """Env steps of the linear decay."""
    factor: float = Field(0.99999, gt=0.0, le=1.0)
    """Per-env-step multiplier of the multiplicative schedule."""
    eval: float = Field(0.0, ge=0.0, le=1.0)
    """ε during greedy evaluation (a small value keeps Atari evaluations from stalling)."""

    def at(self, step: int) -> float:
        """ε after ``step`` env steps."""
        if self.schedule == "multiplicative":
            return max(self.end, self.start * self.factor ** step)
        if step >= self.decay_steps:
            return self.end
        return self.start + (step / self.decay_steps) * (self.end - self.start)


class NoiseConfig(_Section):
    """Gaussian exploration noise of DDPG, TD3 and SAC: every action is ``actor(s) + N(bias, σ)``."""

    sigma: Annotated[float, Setting(flag="--sigma", shortcut="sigma", metavar="SIGMA")] = Field(0.1, ge=0.0)
    """σ of the Gaussian exploration noise (DDPG/TD3/SAC), in ``algorithm.noise.units``
    (normalised by default: 1 = half the action range)."""
    units: Literal["normalized", "env"] = "normalized"
    """``normalized``: the action range maps to [-1, 1] (1 = half the range); ``env``: the
    environment's own action units (the paper's), converted per dimension."""


class PrioritizedConfig(_Section):
    """Prioritised experience replay."""

    enabled: bool = False
    """Sample transitions in proportion to their TD error (``PrioritizedVectorReplayBuffer``)."""
    alpha: float = Field(0.6, ge=0.0)
    """Priority exponent."""
    beta: float = Field(0.4, ge=0.0, le=1.0)
    """Importance-sampling exponent at the start; annealed linearly to ``beta_final`` over the
    run's ``steps``."""
    beta_final: float = Field(1.0, ge=0.0, le=1.0)
    """Importance-sampling exponent reached at the last env step."""


class CurlConfig(_Section):
    """CURL (``algo: curl``): the contrastive part, trained with data-efficient Rainbow."""

    momentum: float = Field(0.999, ge=0.0, lt=1.0)
    """m of the key encoder's update after every gradient step: θ_k ← m θ_k + (1 − m) θ_q."""
    loss_coef: float = Field(1.0, ge=0.0)
    """Weight of the contrastive (InfoNCE) loss added to the RL loss."""
    latent_dim: int = Field(128, ge=1)
    """Size of the contrastive code (the bilinear matrix W is latent_dim × latent_dim)."""
    max_grad_norm: float | None = Field(10.0, gt=0.0)
    """Clip of the gradient's L2 norm in each step (None: no clipping)."""


class RNDConfig(_Section):
    """RND-DQN (``algo: rnd-dqn``): the random-network-distillation intrinsic reward (Burda et al. 2018)."""

    coef: float = Field(0.5, ge=0.0)
    """Weight of the normalised intrinsic reward in ``r + coef * r_intrinsic`` (0: the predictor
    still learns, the targets are DQN's)."""
    lr: float = Field(1e-4, gt=0.0)
    """Learning rate of the predictor network (Adam)."""
    output_dim: int = Field(512, ge=1)
    """Size of the target and predictor networks' output (the features the predictor imitates)."""
    gamma: float = Field(0.99, ge=0.0, le=1.0)
    """Discount of the intrinsic returns whose running standard deviation scales the reward."""
    obs_clip: float = Field(5.0, gt=0.0)
    """Normalised observations are clipped to [-obs_clip, obs_clip]."""


class ICMConfig(_Section):
    """ICM-DQN (``algo: icm-dqn``): the Intrinsic Curiosity Module (Pathak et al. 2017), through
    Tianshou's ICM wrapper."""

    reward_scale: float = Field(0.01, ge=0.0)
    """Intrinsic reward = reward_scale x the forward model's error (0: no curiosity reward)."""
    forward_loss_weight: float = Field(0.2, ge=0.0, le=1.0)
    """β: the module's loss is (1 − β) x inverse loss + β x forward loss."""
    lr_scale: float = Field(1.0, gt=0.0)
    """The module's loss is multiplied by this before its Adam step (learning rate ``lr``)."""


class AlgorithmConfig(_Section):
    """Hyperparameters of the RL algorithm. Fields an algorithm does not use are ignored by it."""

    lr: float = Field(6.3e-4, gt=0.0)
    """Learning rate of the Q-network (DQN family) or of the actor (DDPG/TD3/SAC)."""
    critic_lr: float = Field(1e-3, gt=0.0)
    """Learning rate of the critics (DDPG/TD3/SAC)."""
    adam_eps: float = Field(1e-8, gt=0.0)
    """ε of every Adam optimiser."""
    fused_adam: bool = True
    """Adam's fused kernel (one pass per parameter tensor; about 3× faster steps on CPU). Its
    results differ from torch's default loop in the last bits of float rounding, so a seeded run is
    not byte-identical to one with ``false``; docs/benchmarks.md has the 5-seed comparison of the
    learning curves. ``false``: the multi-tensor kernel, bit-identical to the loop."""
    gamma: float = Field(0.99, ge=0.0, le=1.0)
    """Discount factor."""
    batch_size: int = Field(128, ge=1)
    """Transitions per gradient step."""
    buffer_size: int = Field(50_000, ge=1)
    """Replay buffer capacity in transitions (raised to hold one whole episode per training env)."""
    n_step: int = Field(1, ge=1)
    """n-step return horizon."""
    target_update_freq: int = Field(0, ge=0)
    """DQN family: gradient steps between target-network syncs (0: no target network)."""
    tau: float = Field(0.005, gt=0.0, le=1.0)
    """DDPG/TD3/SAC: soft target-update coefficient."""
    collect_per_step: int = Field(16, ge=1)
    """Env steps collected between two rounds of gradient steps."""
    updates_per_step: float = Field(0.25, gt=0.0)
    """Gradient steps per collected env step (the update-to-data ratio)."""
    learning_starts: int = Field(1000, ge=0)
    """No gradient step before this many env steps."""
    random_warmup_steps: int = Field(0, ge=0)
    """Uniformly random actions collected first (continuous control)."""
    huber_loss_delta: float | None = Field(None, gt=0.0)
    """DQN/Double/Dueling: Huber loss with this δ; None: mean squared error (the paper's)."""
    num_atoms: int = Field(51, ge=2)
    """C51/Rainbow: atoms of the return distribution."""
    v_min: float = -100.0
    """C51/Rainbow: smallest atom."""
    v_max: float = 100.0
    """C51/Rainbow: largest atom."""
    num_quantiles: int = Field(50, ge=1)
    """QRDQN: quantiles."""
    noisy_std: float = Field(0.1, ge=0.0)
    """Rainbow, noisy-dqn: σ0 of the noisy linear layers (factorised noise: each weight's σ starts
    at σ0 / √fan-in)."""
    policy_noise: float = Field(0.2, ge=0.0)
    """TD3: target-policy smoothing noise (normalised units)."""
    noise_clip: float = Field(0.5, ge=0.0)
    """TD3: clip of the smoothing noise (normalised units)."""
    update_actor_freq: int = Field(2, ge=1)
    """TD3: critic updates per actor update (policy delay)."""
    sac_alpha: float = Field(0.2, gt=0.0)
    """SAC: initial entropy coefficient (tuned automatically towards −|A| entropy)."""
    epsilon: EpsilonConfig = Field(default_factory=EpsilonConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    prioritized: PrioritizedConfig = Field(default_factory=PrioritizedConfig)
    curl: CurlConfig = Field(default_factory=CurlConfig)
    rnd: RNDConfig = Field(default_factory=RNDConfig)
    icm: ICMConfig = Field(default_factory=ICMConfig)

    @field_validator("v_max")
    @classmethod
    def _atoms_span(cls, value: float, info: ValidationInfo) -> float:
        v_min = info.data.get("v_min")
        if v_min is not None and value <= v_min:
            raise ValueError(f"must be greater than v_min ({v_min})")
        return value


class NetworkConfig(_Section):
    """Network sizes. Atari observations get the Nature DQN convolutional torso first."""

    hidden_sizes: tuple[int, ...] = Field((256, 256), min_length=1)
    """Hidden layer widths of the MLPs (Q-network, actor, critics); with Atari, the width of the
    layer after the convolutional torso is the last one."""

    @field_validator("hidden_sizes")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(h < 1 for h in value):
            raise ValueError(f"every size must be >= 1, got {list(value)}")
        return value


class EvalConfig(_Section):
    """Greedy evaluation (no exploration noise, ε = ``algorithm.epsilon.eval``)."""

    every: int = Field(10_000, ge=1)
    """Env steps between evaluations (and one at the end)."""
    episodes: Annotated[int, Setting(flag="--eval-episodes", shortcut="eval_episodes", metavar="E")] = \
        Field(10, ge=1)
    """Greedy evaluation episodes at each evaluation."""


class AtariConfig(_Section):
    """Preprocessing of ``ALE/*`` environments (gymnasium's wrappers); ignored elsewhere."""

    frame_stack: int = Field(4, ge=1)
    """Frames stacked into one observation."""
    screen_size: int = Field(84, ge=8)
    """Frames are resized to ``screen_size`` × ``screen_size`` grey."""
    noop_max: int = Field(30, ge=0)
    """Up to this many no-op actions after a reset."""
    terminal_on_life_loss: bool = False
    """End a training episode when a life is lost."""
    clip_rewards: bool = True
    """Learn from sign-clipped rewards; reported returns stay unclipped."""


class CheckpointConfig(_Section):
    """Checkpoints: ``llm-explorer train --resume RUN_DIR`` continues a run from its newest complete
    one (after a crash, SIGKILL or Ctrl-C). Writing one does not change what the run computes."""

    enabled: bool = True
    """Write checkpoints (one before the first training step, then at the cadence below, and
    one when Ctrl-C stops the run)."""
    every_steps: int | None = Field(None, ge=1)
    """Env steps between two checkpoints; None: by time only."""
    every_minutes: float | None = Field(10.0, gt=0.0)
    """Minutes of training between two checkpoints; None: by env steps only. With both set,
    whichever comes first."""
    keep: int = Field(2, ge=1)
    """Complete checkpoints kept; the oldest is deleted once a newer one is complete."""
    include_buffer: Literal["auto", "always", "never"] = "auto"
    """Save the replay buffer: ``always``, ``never``, or ``auto`` (when its arrays take at most
    ``buffer_limit_mb``). Without it a resumed run starts from an empty buffer and fresh episodes,
    and no longer matches an uninterrupted run."""
    buffer_limit_mb: float = Field(1024.0, gt=0.0)
    """The largest replay buffer ``include_buffer: auto`` saves, in MiB."""


class RunConfig(_Section):
    """One training run. ``llm-explorer train --show-config`` prints it resolved."""

    preset: Annotated[str, Setting(shortcut="preset")] = "default"
    """The preset the values were resolved from (``default``: tuned for a 2-core CPU;
    ``paper``: the authors' settings)."""
    env: Annotated[str, Setting(flag="--env", metavar="ENV")]
    """A gymnasium id (``CartPole-v1``, ``ALE/Pong-v5``, ``Hopper-v5``) or ``module:EnvId``."""
    algo: Annotated[str, Setting(flag="--algo", shortcut="algo", metavar="ALGO")]
    """One of dqn, double-dqn, dueling-dqn, c51, qrdqn, rainbow, curl (discrete actions; curl only
    on Atari frames), noisy-dqn, rnd-dqn, icm-dqn (exploration baselines; noisy-dqn has no ε-random
    draw for an LLM to guide), ddpg, td3, sac (continuous actions)."""
    seed: Annotated[int, Setting(flag="--seed", metavar="S")] = Field(0, ge=0)
    """Seeds torch, numpy, the environments and the exploration draws."""
    steps: Annotated[int, Setting(flag="--steps", shortcut="steps", metavar="N",
                                  default="the preset's budget for the env family")] = Field(100_000, ge=1)
    """Env steps to train."""
    episodes: int | None = Field(None, ge=1)
    """Also stop once this many training episodes have finished (None: no episode cap). Training
    ends at whichever of ``steps`` and ``episodes`` comes first, after the collect in which the
    cap was reached (with several training envs a few more episodes may finish in it)."""
    train_envs: int = Field(4, ge=1)
    """Training environments stepped together (batched forward passes)."""
    test_envs: int = Field(10, ge=1)
    """Evaluation environments (at most ``eval.episodes`` are used)."""
    env_workers: Literal["dummy", "subproc", "shmem"] = "dummy"
    """How the vector envs step their environments (Tianshou's vector envs): ``dummy``, one after
    another in this process; ``subproc``, each in its own process, talking through pipes;
    ``shmem``, each in its own process with observations in shared memory (for Atari frames).
    Worker processes pay off when a step costs more than the round trip to them (Atari, MuJoCo)
    and there are cores for them; the environments, seeds and results are the same. Checkpoints
    cannot save environments in other processes: a resumed run starts fresh episodes."""
    device: Annotated[Literal["auto", "cpu", "cuda"], Setting(flag="--device")] = "cpu"
    """Where the networks live; ``auto`` takes CUDA when torch sees a GPU."""
    torch_threads: int = Field(1, ge=1)
    """Threads torch may use for one run."""
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    atari: AtariConfig = Field(default_factory=AtariConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    explorer: ExplorerConfig = Field(default_factory=lambda: ExplorerConfig(provider="none"))

    @field_validator("algo")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {value!r}; available: {', '.join(ALGORITHMS)}")
        return value

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; available: {', '.join(PRESETS)}")
        return value

    @property
    def baseline(self) -> bool:
        """True when no LLM is asked (``explorer.provider: none``)."""
        return not self.explorer.enabled

    @property
    def is_discrete(self) -> bool:
        """The algorithm is one of the DQN family (discrete actions)."""
        return self.algo in DISCRETE_ALGOS


# --------------------------------------------------------------------------- errors
class ConfigError(UsageError):
    """A configuration that cannot run. One line per problem, each naming the key path and,
    for values from a file, ``file:line``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(f"invalid configuration: {self.problems[0]}")
        else:
            super().__init__("invalid configuration: " + "; ".join(self.problems))


@dataclass
class _Source:
    """Where each configured value came from, to name it in error messages."""

    file: str | None = None
    doc: YamlDocument | None = None
    origins: dict[tuple[str, ...], str] | None = None

    def where(self, path: tuple[str | int, ...]) -> str:
        keys = tuple(str(p) for p in path)
        for n in range(len(keys), 0, -1):
            origin = (self.origins or {}).get(keys[:n])
            if origin is not None:
                return origin
        if self.doc is not None and self.file is not None and _has_path(self.doc.data, path):
            pos = self.doc.locate(path)
            return f"{self.file}:{pos.line}" if pos else self.file
        return ""


def _has_path(data: Any, path: Sequence[str | int]) -> bool:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return False
    return True


def _dotted(path: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in path)


def _format_errors(exc: ValidationError, source: _Source) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = _dotted(loc) if loc else "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            message = f"unknown key {key!r}{_allowed_keys(loc[:-1])}"
        elif kind == "missing":
            flag = f", with --{loc[0]}" if len(loc) == 1 else ""  # only top-level keys (env, algo) have flags
            message = f"{key}: missing (set it in the file{flag} or with --set {key}=...)"
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
            message = f"{key} {_requirement(err)}{shown}"
        where = source.where(loc)
        problems.append(f"{where}: {message}" if where else message)
    return problems


_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
           "less_than": ("<", "lt")}


def _requirement(err: Mapping[str, Any]) -> str:
    """What a value must be, in the words the CLI's other messages use."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _BOUNDS:
        sign, name = _BOUNDS[kind]
        return f"must be {sign} {ctx.get(name)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}".replace("'", "")
    if kind == "value_error":
        return "is invalid: " + str(ctx.get("error", err["msg"]))
    return "is invalid: " + err["msg"][:1].lower() + err["msg"][1:]


def _allowed_keys(parent: Sequence[str | int]) -> str:
    model: Any = RunConfig
    for part in parent:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    return f"; allowed: {', '.join(model.model_fields)}"


# --------------------------------------------------------------------------- presets
def _preset_document(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError([f"preset: unknown preset {name!r}; available: {', '.join(PRESETS)}"])
    text = resources.files("tianshou_integration").joinpath("presets", f"{name}.yaml").read_text("utf-8")
    data = read_yaml(text).data
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise RuntimeError(f"preset {name!r} is malformed: it needs a 'rules' list")  # shipped data
    parent = data.get("extends")
    if parent:  # the parent's rules first, then this preset's
        data = {**data, "rules": [*_preset_document(parent)["rules"], *data["rules"]]}
    return data


def family_of(env_id: str) -> str:
    """``CartPole`` for ``CartPole-v1``, ``Breakout`` for ``ALE/Breakout-v5``."""
    return env_id.split(":")[-1].split("/")[-1].rsplit("-v", 1)[0]


def group_of(env_id: str) -> str:
    """``atari`` (``ALE/*``), ``mujoco`` (gymnasium's MuJoCo tasks) or ``other``."""
    if env_id.split(":")[-1].startswith("ALE/"):
        return "atari"
    return "mujoco" if family_of(env_id) in MUJOCO_FAMILIES else "other"


def _matches(rule: Mapping[str, Any], *, algo: str, kind: str, family: str, group: str) -> bool:
    def listed(key: str, value: str) -> bool:
        want = rule.get(key)
        if want is None:
            return True
        return value in ([want] if isinstance(want, str) else want)

    return listed("algo", algo) and listed("kind", kind) and listed("family", family) and listed("group", group)


def preset_values(name: str, env_id: str, algo: str, *, discrete: bool) -> dict[str, Any]:
    """The nested values preset ``name`` gives ``algo`` on ``env_id``: every matching rule, in
    file order, merged (a later rule wins key by key)."""
    kind = "discrete" if discrete else "continuous"
    values: dict[str, Any] = {}
    for rule in _preset_document(name)["rules"]:
        match = rule.get("match", {})
        if _matches(match, algo=algo, kind=kind, family=family_of(env_id), group=group_of(env_id)):
            _deep_merge(values, rule.get("set", {}))
    return values


def _deep_merge(into: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


# --------------------------------------------------------------------------- reading and overrides
def load_config_file(path: str | Path) -> tuple[dict[str, Any], YamlDocument]:
    """Read a YAML configuration (strict: duplicate keys are errors). Raises :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read configuration file {str(path)!r}: {exc.strerror or exc}"]) from None
    try:
        doc = read_yaml(text)
    except YamlError as exc:
        where = f"{path}:{exc.position.line}" if exc.position else str(path)
        raise ConfigError([f"{where}: {exc}"]) from None
    if doc.data is None:
        return {}, doc
    if not isinstance(doc.data, dict):
        raise ConfigError([f"{path}:1: a configuration is a mapping of keys such as env, algo, algorithm, explorer"])
    return doc.data, doc


def parse_assignment(text: str) -> tuple[tuple[str, ...], Any]:
    """``algorithm.lr=1e-4`` -> (("algorithm", "lr"), 0.0001). The value is read as YAML, so
    numbers, booleans, ``null`` and ``[256, 256]`` work; anything else stays text."""
    key, sep, raw = text.partition("=")
    path = tuple(part.strip() for part in key.split("."))
    if not sep or not all(path):
        raise ConfigError([f"--set needs dotted.key=value, got {text!r}"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def set_path(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value``, creating mappings on the way."""
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


# --------------------------------------------------------------------------- resolution
def resolve(
    *,
    file: str | Path | None = None,
    overrides: Iterable[tuple[Sequence[str], Any, str]] = (),
    preset: str | None = None,
    describe: Any = None,
) -> RunConfig:
    """Build the resolved :class:`RunConfig`.

    :param file: a YAML configuration (a resolved ``config.yaml`` of an earlier run works).
    :param overrides: ``(key path, value, origin)`` in order; origin names the flag in errors
        (``--steps``, ``--set algorithm.lr=...``).
    :param preset: overrides the file's ``preset`` key.
    :param describe: ``env_id -> EnvInfo`` (default :func:`tianshou_integration.envs.describe_env`),
        used to pick the preset's rules and to check that the algorithm fits the action space.
    Raises :class:`ConfigError` (a :class:`UsageError`) naming every problem's key path.
    """
    data: dict[str, Any] = {}
    source = _Source(origins={})
    if file is not None:
        data, doc = load_config_file(file)
        data = copy.deepcopy(data)
        source.file, source.doc = str(file), doc
    for path, value, origin in overrides:
        set_path(data, tuple(path), value)
        assert source.origins is not None
        if origin:
            source.origins[tuple(str(p) for p in path)] = origin
    if preset is not None:
        data["preset"] = preset
        assert source.origins is not None
        source.origins[("preset",)] = "--preset"
    chosen = data.get("preset", "default")
    if not isinstance(chosen, str) or chosen not in PRESETS:
        where = source.where(("preset",))
        raise ConfigError([f"{where + ': ' if where else ''}preset: unknown preset {chosen!r}; "
                           f"available: {', '.join(PRESETS)}"])
    _structural_check(data, source)
    env_id, algo = data.get("env"), data.get("algo")
    if describe is None:
        from .envs import describe_env as describe
    try:
        info = describe(env_id)
    except UsageError as exc:
        where = source.where(("env",))
        raise ConfigError([f"{where + ': ' if where else ''}env: {exc}"]) from None
    problem = _fit_problem(algo, info)
    if problem:
        where = source.where(("algo",))
        raise ConfigError([f"{where + ': ' if where else ''}algo: {problem}"])
    merged = _deep_merge(preset_values(chosen, env_id, algo, discrete=info.is_discrete), data)
    config = _validate(merged, source)
    return _adjust(config, info)


def make_config(env: str, algo: str, settings: Mapping[str, Any] | None = None, *, preset: str | None = None,
                file: str | Path | None = None, describe: Any = None) -> RunConfig:
    """The Python API's way to a resolved configuration::

        make_config("CartPole-v1", "dqn", {"steps": 5000, "explorer.provider": "scripted",
                                            "algorithm.epsilon.schedule": "multiplicative"})

    ``settings`` maps dotted keys to values (the same keys as ``--set``); they override ``file``
    and the preset. Raises :class:`ConfigError`.
    """
    overrides: list[tuple[Sequence[str], Any, str]] = [(("env",), env, ""), (("algo",), algo, "")]
    overrides += [(tuple(key.split(".")), value, "") for key, value in (settings or {}).items()]
    return resolve(file=file, overrides=overrides, preset=preset, describe=describe)


def _structural_check(data: dict[str, Any], source: _Source) -> None:
    """Validate what was given (unknown keys, types, ranges, env/algo present) before the
    environment is made, so a typo is reported without loading gymnasium."""
    probe = copy.deepcopy(data)
    probe.setdefault("env", "CartPole-v1")
    probe.setdefault("algo", "dqn")
    missing = [key for key in ("env", "algo") if key not in data]
    problems: list[str] = []
    try:
        RunConfig.model_validate(probe)
    except ValidationError as exc:
        problems = _format_errors(exc, source)
    problems += [f"{key}: missing (give --{key} or set {key} in the configuration file)" for key in missing]
    if problems:
        raise ConfigError(problems)


def _validate(data: dict[str, Any], source: _Source) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def _fit_problem(algo: str, info: Any) -> str | None:
    if algo in DISCRETE_ALGOS and not info.is_discrete:
        return (f"{algo} needs discrete actions but {info.env_id} has continuous ones; "
                f"use one of {', '.join(CONTINUOUS_ALGOS)}")
    if algo == "curl" and len(info.obs_shape) != 3:
        return (f"curl learns from stacked frames (an Atari env such as ALE/Pong-v5); {info.env_id} has "
                f"observations of shape {tuple(info.obs_shape)}")
    if algo in CONTINUOUS_ALGOS and info.is_discrete:
        return (f"{algo} needs continuous actions but {info.env_id} has discrete ones; "
                f"use one of {', '.join(DISCRETE_ALGOS)}")
    return None


def _adjust(config: RunConfig, info: Any) -> RunConfig:
    """Every training env's share of the buffer must hold one whole episode: the episode tap
    reads an episode's actions back from it."""
    if info.max_episode_steps:
        need = config.train_envs * (info.max_episode_steps + 1)
        if config.algorithm.buffer_size < need:
            algorithm = config.algorithm.model_copy(update={"buffer_size": need})
            return config.model_copy(update={"algorithm": algorithm})
    return config


def dump_config(config: RunConfig) -> str:
    """The configuration as YAML that :func:`resolve` reads back to the same object."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
