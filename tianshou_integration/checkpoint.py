"""Checkpoints of a training run: written atomically, the newest complete one restores the run.

A checkpoint is a directory ``RUN_DIR/checkpoints/step-<env step, 12 digits>/``:

===============  ==========================================================================
``state.pt``     ``torch.save`` of one dict: the training loop's position, the algorithm's
                 ``state_dict`` (networks, target networks, optimisers) plus its counters and
                 any optimiser Tianshou does not list, every random generator (Python, numpy's
                 global one, torch, the guided-draw generator, the replay buffer's sampler),
                 the episode tap, the exploration noise, the exploration cache, the explorer
                 runtime (counters, recent episodes, and the pipeline's state: each stage's,
                 the control arm's and the chat model's ``get_state``, see
                 :mod:`explorer_pipeline.state`) and where the run directory's files stood
``envs.pkl``     the training and evaluation environments, pickled wrapper by wrapper; bases
                 that pickling would rebuild from scratch (ALE, MuJoCo) also save their
                 emulator / simulator state
``buffer.pkl``   the replay buffer, when ``checkpoint.include_buffer`` says so
``meta.json``    written last: the step, the files and their sizes, the configuration it belongs
                 to, and what is not restored exactly (``limits``)
===============  ==========================================================================

Writing goes to ``checkpoints/.partial-*`` first; every file is synced, ``meta.json`` is written
last, and the directory is renamed into place. A process killed while writing leaves a
``.partial-*`` directory, which is ignored (and removed by the next writer). When reading, a
checkpoint whose files do not have the sizes ``meta.json`` lists, or that fails to load, is
skipped in favour of the previous one.

The files are pickles: load only checkpoints you wrote yourself, with the same version of the
code and packages.

Tianshou's private attributes (the buffer's sampler, the collector's episodes in progress, the
algorithms' counters) are read and written in :mod:`tianshou_integration.tianshou_state` only.

Restoring is exact (a resumed run computes what an uninterrupted one would) when the buffer was
saved, every environment could be saved (gymnasium's pure-Python environments, ALE, MuJoCo),
training runs on the CPU, and the explorer has no request in flight at the checkpoint (blocking
mode). Anything else is listed in ``meta.json``'s ``limits`` and in the resumed run's manifest.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import pickle
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from explorer_pipeline.errors import UsageError
from explorer_pipeline.state import state_of

from .config import CheckpointConfig, RunConfig
from .tianshou_state import (
    algorithm_state,
    buffer_nbytes,
    children_detached,
    cut_open_episodes,
    link_children,
    restore_algorithm,
    restore_sampler,
    sampler_state,
)
from .training import LoopState

if TYPE_CHECKING:
    from explorer_pipeline.cache import ExplorationCache
    from explorer_pipeline.runtime import ExplorerRuntime

    from .algorithms import AlgoSetup
    from .rundir import RunDir
    from .tap import EpisodeTap

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINTS_DIR",
    "CheckpointError",
    "Checkpointer",
    "EnvNotSaved",
    "LoadedCheckpoint",
    "RunParts",
    "StoredCheckpoint",
    "buffer_nbytes",
    "capture_env_states",
    "complete_checkpoints",
    "config_fingerprint",
    "discard_newer",
    "load_newest",
    "restore_env_states",
    "restore_run",
]

CHECKPOINTS_DIR = "checkpoints"
"""The run directory's sub-directory that holds the checkpoints."""
FORMAT = 3
STATE_FILE, ENVS_FILE, BUFFER_FILE, META_FILE = "state.pt", "envs.pkl", "buffer.pkl", "meta.json"
_PARTIAL = ".partial-"
_MIB = 1024 * 1024


class CheckpointError(UsageError):
    """No usable checkpoint, or one that does not belong to the configuration (exit status 2)."""


# --------------------------------------------------------------------------- configuration identity
#: Settings that do not change what a run computes, besides ``checkpoint.*``: a resume may change
#: them (e.g. ``--option preflight=off`` to resume while the LLM server is still down; requests
#: that fail then are counted, as when a server dies mid-run).
NOT_IDENTITY: tuple[tuple[str, ...], ...] = (("explorer", "provider_options", "preflight"),)


def _parent(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = data
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _identity(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a dumped configuration, changed in place) without what does not change the run:
    ``checkpoint`` and :data:`NOT_IDENTITY`."""
    data.pop("checkpoint", None)
    for path in NOT_IDENTITY:
        node = _parent(data, path)
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return data


def _without_checkpoint(config: RunConfig) -> dict[str, Any]:
    return _identity(config.model_dump(mode="json"))


def config_fingerprint(config: RunConfig) -> str:
    """SHA-256 of the resolved configuration without its ``checkpoint`` section (how often
    checkpoints are written does not change what a run computes) and :data:`NOT_IDENTITY`."""
    text = yaml.safe_dump(_without_checkpoint(config), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_differences(saved: dict[str, Any], config: RunConfig,
                       labels: tuple[str, str] = ("run", "given")) -> list[str]:
    """Dotted keys (outside ``checkpoint`` and :data:`NOT_IDENTITY`) whose values differ, as
    ``key (run: a, given: b)``."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b:
            out.append(f"{path} ({labels[0]}: {a!r}, {labels[1]}: {b!r})")

    walk(_identity(copy.deepcopy(saved)), _without_checkpoint(config), "")
    return out


# --------------------------------------------------------------------------- what makes up a run
@dataclass
class RunParts:
    """The live objects of one run that a checkpoint saves and restores.

    :param setup: the algorithm, its policy, envs and replay buffer (``AlgoSetup``).
    :param rng: the generator of the guided exploration draws.
    :param tap: the episode tap (episode count, last record).
    :param cache: the exploration cache the collector reads.
    :param rundir: the run directory (file positions, updates held until applied).
    :param runtime: the explorer runtime, or None without an LLM.
    """

    setup: AlgoSetup
    rng: np.random.Generator
    tap: EpisodeTap
    cache: ExplorationCache
    rundir: RunDir
    runtime: ExplorerRuntime | None = None


# --------------------------------------------------------------------------- random generators
def _capture_rngs(rng: np.random.Generator) -> dict[str, Any]:
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state_all()
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": cuda, "guided": rng.bit_generator.state}


def _restore_rngs(state: dict[str, Any], rng: np.random.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    rng.bit_generator.state = state["guided"]


# --------------------------------------------------------------------------- environments
class EnvNotSaved(Exception):
    """An environment whose state cannot be saved exactly."""


def _base_state(base: Any) -> dict[str, Any] | None:
    """State that pickling would lose: bases pickled by their constructor arguments (gymnasium's
    ``EzPickle``) come back freshly built. None: pickling keeps everything."""
    from gymnasium.utils import EzPickle

    if not isinstance(base, EzPickle):
        return None
    rng = base.np_random.bit_generator.state
    if type(base).__module__.startswith("ale_py"):
        return {"kind": "ale", "ale": base.ale.cloneState(include_rng=True), "np_random": rng}
    with contextlib.suppress(ImportError):
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

        if isinstance(base, MujocoEnv):
            return {"kind": "mujoco", "data": pickle.dumps(base.data, protocol=pickle.HIGHEST_PROTOCOL),
                    "np_random": rng}
    raise EnvNotSaved(f"{type(base).__name__} is rebuilt from scratch when unpickled and its state "
                       "has no saver (ALE and MuJoCo have one)")


def _restore_base(base: Any, state: dict[str, Any]) -> None:
    if state["kind"] == "ale":
        base.ale.restoreState(state["ale"])
    elif state["kind"] == "mujoco":
        import mujoco

        mujoco.mj_copyData(base.data, base.model, pickle.loads(state["data"]))
    base.np_random.bit_generator.state = state["np_random"]


def capture_env_states(venv: Any) -> list[dict[str, Any]]:
    """Each environment of a (dummy) vector env: its wrapper chain pickled, the state pickling would
    lose, and its action space's generator. Raises :class:`EnvNotSaved` when one cannot be saved."""
    states = []
    for worker in venv.workers:
        env = getattr(worker, "env", None)
        if env is None:
            raise EnvNotSaved(f"{type(worker).__name__} runs its environment in another process")
        space = worker.action_space
        try:
            chain = pickle.dumps(env, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise EnvNotSaved(f"{type(env.unwrapped).__name__} cannot be pickled: {exc}") from None
        states.append({"chain": chain, "base": _base_state(env.unwrapped),
                       "space_rng": space.np_random.bit_generator.state})
    return states


def restore_env_states(venv: Any, states: list[dict[str, Any]]) -> None:
    """Replace each environment of ``venv`` by its saved copy (the old ones are closed)."""
    if len(states) != len(venv.workers):
        raise ValueError(f"the checkpoint has {len(states)} environments, the run has {len(venv.workers)}")
    for worker, state in zip(venv.workers, states, strict=True):
        env = pickle.loads(state["chain"])
        if state["base"] is not None:
            _restore_base(env.unwrapped, state["base"])
        old = worker.env
        worker.env = env
        worker.action_space = env.unwrapped.action_space
        worker.action_space.np_random.bit_generator.state = state["space_rng"]
        with contextlib.suppress(Exception):
            old.close()


# --------------------------------------------------------------------------- on disk
@dataclass
class StoredCheckpoint:
    """A complete checkpoint directory (its files have the sizes its ``meta.json`` lists)."""

    path: Path
    step: int
    meta: dict[str, Any]


@dataclass
class LoadedCheckpoint:
    """A checkpoint read into memory, ready for :func:`restore_run`."""

    stored: StoredCheckpoint
    state: dict[str, Any]
    envs: dict[str, Any] | None
    buffer: Any

    @property
    def step(self) -> int:
        """The env step the checkpoint was taken at."""
        return self.stored.step

    @property
    def limits(self) -> list[str]:
        """What a run resumed from it does not restore exactly (empty: an exact continuation)."""
        return list(self.stored.meta.get("limits", []))


def _step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        if child.is_dir() and child.name.startswith("step-") and child.name[5:].isdigit():
            out.append((int(child.name[5:]), child))
    return sorted(out, reverse=True)


def _check(path: Path, step: int) -> tuple[StoredCheckpoint | None, str]:
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{META_FILE} unreadable ({exc.__class__.__name__})"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("step") != step:
        return None, f"{META_FILE} is not a format-{FORMAT} checkpoint of step {step}"
    for name, size in meta.get("files", {}).items():
        try:
            actual = (path / name).stat().st_size
        except OSError:
            return None, f"{name} is missing"
        if actual != size:
            return None, f"{name} has {actual} bytes, {size} were written"
    return StoredCheckpoint(path, step, meta), ""


def complete_checkpoints(run_dir: str | Path) -> list[StoredCheckpoint]:
    """The run's complete checkpoints, newest first (partial and damaged ones left out)."""
    out = []
    for step, path in _step_dirs(Path(run_dir)):
        stored, why = _check(path, step)
        if stored is not None:
            out.append(stored)
        else:
            log.warning("ignoring checkpoint %s: %s", path, why)
    return out


def _load(stored: StoredCheckpoint, device: str) -> LoadedCheckpoint:
    state = torch.load(stored.path / STATE_FILE, map_location=device, weights_only=False)
    envs = None
    if ENVS_FILE in stored.meta["files"]:
        with open(stored.path / ENVS_FILE, "rb") as f:
            envs = pickle.load(f)
    buffer = None
    if BUFFER_FILE in stored.meta["files"]:
        with open(stored.path / BUFFER_FILE, "rb") as f:
            buffer = pickle.load(f)
        link_children(buffer)
    return LoadedCheckpoint(stored, state, envs, buffer)


def load_newest(run_dir: str | Path, config: RunConfig, *, device: str = "cpu") -> LoadedCheckpoint:
    """Read the newest complete checkpoint that loads; older ones are tried when a newer one is
    damaged. Raises :class:`CheckpointError` when none is usable, or when the run's configuration
    (``config``, without its ``checkpoint`` section) is not the one the checkpoints were written with."""
    run_dir = Path(run_dir)
    fingerprint = config_fingerprint(config)
    reasons: list[str] = []
    for step, path in _step_dirs(run_dir):
        stored, why = _check(path, step)
        if stored is None:
            reasons.append(f"step {step}: {why}")
            log.warning("ignoring checkpoint %s: %s", path, why)
            continue
        if stored.meta.get("fingerprint") != fingerprint:
            diff = config_differences(stored.meta.get("config", {}), config, ("checkpoint", "config.yaml"))
            raise CheckpointError(f"the checkpoint at env step {step} in {str(run_dir)!r} was written with a "
                                  f"different configuration than {str(run_dir / 'config.yaml')!r} holds now"
                                  + (f": {'; '.join(diff)}" if diff else ""))
        try:
            return _load(stored, device)
        except Exception as exc:  # a damaged file that still has the right size
            reasons.append(f"step {step}: cannot be read ({type(exc).__name__}: {exc})")
            log.warning("ignoring checkpoint %s: cannot be read: %s", path, exc)
    detail = f" ({'; '.join(reasons)})" if reasons else ""
    raise CheckpointError(f"{str(run_dir)!r} has no complete checkpoint to resume from{detail}")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_file(path: Path, write: Callable[[Any], None]) -> int:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return path.stat().st_size


# --------------------------------------------------------------------------- writing
@dataclass
class Checkpointer:
    """Decides when a checkpoint is due and writes it (the training loop's ``checkpoints``).

    :param last_step: the step of the checkpoint a resumed run started from (None: a new run,
        whose first checkpoint is written before its first training step).
    """

    run_dir: Path
    settings: CheckpointConfig
    config: RunConfig
    parts: RunParts
    last_step: int | None = None
    written: int = 0
    seconds: float = 0.0
    bytes_written: int = 0
    failed: int = 0
    _last_time: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        root = self.run_dir / CHECKPOINTS_DIR
        root.mkdir(parents=True, exist_ok=True)
        for child in root.iterdir():  # left by a process killed while writing
            if child.name.startswith(_PARTIAL):
                shutil.rmtree(child, ignore_errors=True)

    def due(self, env_step: int) -> bool:
        """A checkpoint is due before the first iteration, and then every ``every_steps`` env steps or
        ``every_minutes`` minutes, whichever comes first."""
        if self.last_step is None:
            return True
        s = self.settings
        if s.every_steps is not None and env_step - self.last_step >= s.every_steps:
            return True
        return s.every_minutes is not None and time.monotonic() - self._last_time >= 60.0 * s.every_minutes

    def save(self, loop: LoopState) -> Path | None:
        """Write a checkpoint of the run at ``loop``; returns its directory, or None when writing
        failed (logged and counted in ``failed``: training goes on, the previous checkpoint stays)."""
        try:
            return self._save(loop)
        except Exception:
            self.failed += 1
            self.last_step, self._last_time = loop.env_step, time.monotonic()  # try again at the next due time
            log.exception("checkpoint at env step %d failed; the previous one stays in place", loop.env_step)
            return None

    def _save(self, loop: LoopState) -> Path:
        started = time.perf_counter()
        step = loop.env_step
        final = self.run_dir / CHECKPOINTS_DIR / f"step-{step:012d}"
        if final.exists():  # the run was resumed from it and stopped again at once
            self.last_step, self._last_time = step, time.monotonic()
            return final
        parts = self.parts
        setup = parts.setup
        limits: list[str] = []
        explorer = self._explorer_state()
        state = {
            "format": FORMAT,
            "step": step,
            "loop": loop,
            "algorithm": algorithm_state(setup.algorithm),
            "rngs": _capture_rngs(parts.rng),
            "buffer_sampler": sampler_state(setup.buffer),
            "tap": parts.tap.get_state(),
            "noise": state_of(setup.noise),
            "explorer": explorer,
        }
        if parts.runtime is not None and self.config.explorer.mode == "async":
            limits.append("async mode: after a resume the LLM's answers arrive at other env steps than they would "
                          "have; a request running at the checkpoint is not asked again (--replay-schedule "
                          "reproduces a finished run exactly)")
        elif explorer.get("waiting") is not None:
            limits.append("an exploration request was waiting at the checkpoint; it is not asked again")
        envs: dict[str, Any] | None
        try:
            envs = {"train": capture_env_states(setup.train_envs), "test": capture_env_states(setup.test_envs)}
        except EnvNotSaved as exc:
            envs = None
            limits.append(f"environments not saved ({exc}); a resumed run starts fresh episodes")
        with_buffer = self._buffer_included(setup.buffer, limits)
        if setup.device != "cpu":
            limits.append(f"training on {setup.device}: kernels may not be deterministic")
        root = self.run_dir / CHECKPOINTS_DIR
        partial = root / f"{_PARTIAL}{final.name}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            files = {STATE_FILE: _write_file(partial / STATE_FILE, lambda f: torch.save(state, f))}
            if envs is not None:
                files[ENVS_FILE] = _write_file(partial / ENVS_FILE,
                                               lambda f: pickle.dump(envs, f, protocol=pickle.HIGHEST_PROTOCOL))
            if with_buffer:
                def dump_buffer(f: Any) -> None:
                    with children_detached(setup.buffer):
                        pickle.dump(setup.buffer, f, protocol=pickle.HIGHEST_PROTOCOL)

                files[BUFFER_FILE] = _write_file(partial / BUFFER_FILE, dump_buffer)
            meta = {"format": FORMAT, "step": step, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "files": files, "fingerprint": config_fingerprint(self.config),
                    "config": _without_checkpoint(self.config), "buffer": with_buffer,
                    "exact": not limits, "limits": limits}
            _write_file(partial / META_FILE, lambda f: f.write(json.dumps(meta, indent=2).encode("utf-8")))
            _fsync_dir(partial)
            os.rename(partial, final)
            _fsync_dir(root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        self._prune()
        self._done(step, started, sum(files.values()))
        log.info("checkpoint at env step %d: %.1f MiB in %.2f s", step, sum(files.values()) / _MIB,
                 time.perf_counter() - started)
        return final

    def _done(self, step: int, started: float, size: int) -> None:
        self.last_step = step
        self._last_time = time.monotonic()
        self.written += 1
        self.bytes_written += size
        self.seconds += time.perf_counter() - started

    def _buffer_included(self, buffer: Any, limits: list[str]) -> bool:
        mode = self.settings.include_buffer
        if mode == "never":
            limits.append("replay buffer not saved (include_buffer: never); a resumed run starts with an empty "
                          "buffer and fresh episodes")
            return False
        if mode == "auto":
            size = buffer_nbytes(buffer)
            if size > self.settings.buffer_limit_mb * _MIB:
                limits.append(f"replay buffer not saved ({size / _MIB:.0f} MiB > buffer_limit_mb "
                              f"{self.settings.buffer_limit_mb:g}); a resumed run starts with an empty buffer "
                              "and fresh episodes")
                return False
        return True

    def _explorer_state(self) -> dict[str, Any]:
        parts = self.parts
        rundir = parts.rundir

        def owned_by_loop() -> dict[str, Any]:
            return {"rundir": rundir.checkpoint_state()}

        if parts.runtime is None:
            return {"runtime": None, "cache": parts.cache.get_state(), "waiting": None, **owned_by_loop()}
        snap = parts.runtime.get_state(extra=owned_by_loop)
        extra = snap.pop("extra")
        return {"runtime": snap, "cache": snap["cache"], "waiting": snap["waiting"], **extra}

    def _prune(self) -> None:
        for _, path in _step_dirs(self.run_dir)[self.settings.keep:]:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- restoring
def discard_newer(run_dir: str | Path, step: int) -> list[int]:
    """Delete checkpoints newer than ``step`` (damaged ones, or ones a resumed run will write
    again); returns their steps."""
    gone = []
    for s, path in _step_dirs(Path(run_dir)):
        if s > step:
            shutil.rmtree(path, ignore_errors=True)
            gone.append(s)
    return gone


def restore_run(parts: RunParts, loaded: LoadedCheckpoint) -> LoopState:
    """Put the run back where ``loaded`` was taken; returns the loop's state for ``train(resume=...)``.

    Call after ``build_setup`` (which seeds and builds everything afresh) and before the explorer
    runtime starts and before the training loop makes its collectors.
    """
    state = loaded.state
    setup = parts.setup
    restore_algorithm(setup.algorithm, state["algorithm"])
    fresh_episodes = False
    if loaded.buffer is not None:
        if type(loaded.buffer) is not type(setup.buffer):
            raise CheckpointError(f"the checkpoint's replay buffer is a {type(loaded.buffer).__name__}, this run "
                                  f"uses a {type(setup.buffer).__name__}")
        setup.buffer = loaded.buffer
    else:
        restore_sampler(setup.buffer, state["buffer_sampler"])
        fresh_episodes = True
    if loaded.envs is not None:
        restore_env_states(setup.train_envs, loaded.envs["train"])
        restore_env_states(setup.test_envs, loaded.envs["test"])
    else:
        fresh_episodes = True
    parts.tap.set_state(state["tap"])
    parts.tap.counter.value = loaded.step
    if state["noise"] is not None:
        setup.noise.set_state(state["noise"])
    explorer = state["explorer"]
    if parts.runtime is not None and explorer["runtime"] is not None:
        parts.runtime.set_state(explorer["runtime"])  # the pipeline's state with it
    else:
        parts.cache.set_state(explorer["cache"])
    loop: LoopState = state["loop"]
    if fresh_episodes:
        cut_open_episodes(setup.buffer)
        loop.collector = None
    _restore_rngs(state["rngs"], parts.rng)  # last: nothing above may draw from them
    return loop
