"""Scenario sets from a run directory's checkpoints, and the reference networks that score advice.

:func:`record_scenarios` turns every complete checkpoint of a finished run but the newest into a
scenario (the episode the tap saw last, the recent returns, the states the learner visits over its
next episodes with its own exploration, the learner's policy) and keeps the newest as the
reference. :func:`load_reference` rebuilds the reference's networks for scoring continuous
advice. The file format is :mod:`explorer_rundir.scenarios`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tianshou.data import Batch

from explorer_pipeline.errors import UsageError
from explorer_pipeline.types import EpisodeRecord
from explorer_rundir.format import CONFIG_FILE, METRICS_FILE, write_json_atomic

from .algorithms import AlgoSetup, build_setup, noise_sigma
from .checkpoint import STATE_FILE, StoredCheckpoint, complete_checkpoints
from .config import RunConfig, resolve
from .envs import EnvInfo, describe_env, env_factory

__all__ = ["Reference", "load_reference", "record_scenarios"]

HISTORY = 20
SPREAD_SAMPLES = 32


def _setup(config: RunConfig, env: EnvInfo) -> AlgoSetup:
    quiet = config.model_copy(update={"train_envs": 1, "test_envs": 1})
    setup = build_setup(quiet, env, cache=None)
    setup.algorithm.eval()
    return setup


def _load_algorithm(setup: AlgoSetup, stored: StoredCheckpoint) -> dict[str, Any]:
    state = torch.load(stored.path / STATE_FILE, map_location="cpu", weights_only=False)
    setup.algorithm.load_state_dict(dict(state["algorithm"]["state_dict"]))  # networks only: no optimiser or counter
    setup.algorithm.eval()
    return state


def _obs(states: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(states), dtype=torch.float32)


def q_values(setup: AlgoSetup, states: np.ndarray) -> np.ndarray:
    """Q(s, a) of every action in every state (discrete algorithms), N x n."""
    policy = setup.algorithm.policy
    with torch.no_grad():
        logits, _ = policy.model(_obs(states))
        q = policy.compute_q_value(logits, None)
    return q.cpu().numpy().astype(np.float64)


def actions(setup: AlgoSetup, states: np.ndarray) -> np.ndarray:
    """The deterministic action of a continuous policy in every state, normalised units, N x n."""
    policy = setup.algorithm.policy
    with torch.no_grad():
        act = policy(Batch(obs=np.asarray(states, dtype=np.float32), info=Batch())).act
    act = act.cpu().numpy() if isinstance(act, torch.Tensor) else np.asarray(act)
    return np.clip(act.astype(np.float64).reshape(len(states), -1), -1.0, 1.0)


def critic_values(setup: AlgoSetup, states: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """Q(s, a) of the first critic, one value per row."""
    critic = setup.algorithm.critic  # type: ignore[attr-defined]
    with torch.no_grad():
        q = critic(_obs(states), torch.as_tensor(np.asarray(acts), dtype=torch.float32))
    return q.cpu().numpy().astype(np.float64).reshape(len(states))


class Reference:
    """The reference algorithm of a scenario set, for scoring: ``q(states, actions)``."""

    def __init__(self, setup: AlgoSetup) -> None:
        self.setup = setup

    def q(self, states: np.ndarray, acts: np.ndarray) -> np.ndarray:
        """Q_ref(s, a), one value per row (continuous algorithms)."""
        return critic_values(self.setup, states, acts)

    def close(self) -> None:
        """Close the environments the setup made."""
        self.setup.close()


def load_reference(set_dir: str | Path) -> Reference:
    """Rebuild the reference of the scenario set in ``set_dir`` from its configuration and networks."""
    set_dir = Path(set_dir)
    config = resolve(file=set_dir / CONFIG_FILE)
    setup = _setup(config, describe_env(config.env, config.atari))
    state_dict = torch.load(set_dir / "reference" / "networks.pt", map_location="cpu", weights_only=False)
    setup.algorithm.load_state_dict(state_dict)
    setup.algorithm.eval()
    return Reference(setup)


def _history(run_dir: Path, env_id: str, step: int, record: EpisodeRecord) -> list[EpisodeRecord]:
    """The recent training returns before ``step`` (from metrics.csv), then ``record``."""
    returns: list[float] = []
    with contextlib.suppress(OSError), open(run_dir / METRICS_FILE, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("train_return") and int(float(row["step"])) <= step:
                returns.append(float(row["train_return"]))
    earlier = returns[-HISTORY:-1] if returns else []
    start = record.episode_index - len(earlier)
    past = [EpisodeRecord(r, 0, env_id, start + i) for i, r in enumerate(earlier)]
    return [*past, record]


def _visit(setup: AlgoSetup, config: RunConfig, env: EnvInfo, step: int, episodes: int, seed: int) -> np.ndarray:
    """States visited over ``episodes`` episodes of the learner with the exploration it had at ``step``."""
    rng = np.random.default_rng(seed)
    gym_env = env_factory(env.env_id, config, training=False)()
    states: list[np.ndarray] = []
    try:
        space = gym_env.action_space
        eps = config.algorithm.epsilon.at(step) if env.is_discrete else 0.0
        sigma = 0.0 if env.is_discrete else noise_sigma(config, env)
        for k in range(episodes):
            obs, _ = gym_env.reset(seed=seed + k)
            done = False
            while not done:
                states.append(np.asarray(obs, dtype=np.float64))
                if env.is_discrete:
                    if rng.random() < eps:
                        act: Any = int(rng.integers(space.n))
                    else:
                        act = int(np.argmax(q_values(setup, np.asarray([obs]))[0]))
                else:
                    a = actions(setup, np.asarray([obs]))[0] + rng.normal(0.0, 1.0, space.shape) * sigma
                    a = np.clip(a, -1.0, 1.0)
                    act = space.low + (a + 1.0) / 2.0 * (space.high - space.low)
                obs, _, terminated, truncated, _ = gym_env.step(act)
                done = bool(terminated or truncated)
    finally:
        gym_env.close()
    return np.asarray(states)


def _thin(states: np.ndarray, most: int) -> np.ndarray:
    if len(states) <= most:
        return states
    return states[np.linspace(0, len(states) - 1, most).round().astype(int)]


def _arrays(learner: AlgoSetup, ref: AlgoSetup, states: np.ndarray, env: EnvInfo, seed: int) -> dict[str, np.ndarray]:
    if env.is_discrete:
        return {"states": states, "q_ref": q_values(ref, states)}
    pi, pi_ref = actions(learner, states), actions(ref, states)
    rng = np.random.default_rng(seed)
    draws = rng.uniform(-1.0, 1.0, (SPREAD_SAMPLES, *pi.shape))
    spread = np.std([critic_values(ref, states, d) for d in draws], axis=0)
    return {"states": states, "pi": pi, "pi_ref": pi_ref, "q_pi": critic_values(ref, states, pi), "spread": spread}


def record_scenarios(run_dir: str | Path, out: str | Path, *, episodes: int = 3, max_states: int = 256,
                     seed: int = 0, echo: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Write the scenario set of the run in ``run_dir`` to ``out`` (which must not exist or be
    empty); returns its manifest. Raises :class:`UsageError` for a directory without a
    configuration or with fewer than two complete checkpoints, an Atari run, or an occupied ``out``."""
    from explorer_rundir import scenarios as fmt

    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / CONFIG_FILE).is_file():
        raise UsageError(f"{str(run_dir)!r} is not a run directory: {CONFIG_FILE} is missing")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {str(out)!r} is not empty; give a new directory")
    config = resolve(file=run_dir / CONFIG_FILE)
    env = describe_env(config.env, config.atari)
    if env.is_atari:
        raise UsageError(f"{env.env_id}: scenario sets of Atari runs are not supported yet (classic control, "
                         f"toy text, Box2D and MuJoCo are)")
    stored = complete_checkpoints(run_dir)
    if len(stored) < 2:
        raise UsageError(f"{str(run_dir)!r} has {len(stored)} complete checkpoint(s); a scenario set needs at "
                         f"least two (train with --set checkpoint.every_steps=N --set checkpoint.keep=K)")
    reference, snapshots = stored[0], list(reversed(stored[1:]))
    ref = _setup(config, env)
    learner = _setup(config, env)
    out.mkdir(parents=True, exist_ok=True)
    try:
        _load_algorithm(ref, reference)
        (out / "reference").mkdir()
        torch.save(ref.algorithm.state_dict(), out / "reference" / "networks.pt")
        shutil.copyfile(run_dir / CONFIG_FILE, out / fmt.CONFIG)
        entries = []
        for i, snap in enumerate(snapshots):
            state = _load_algorithm(learner, snap)
            record = state["tap"]["last_record"]
            if record is None:  # before the first finished episode: nothing to show the pipeline
                continue
            sid = f"scenario-{len(entries):03d}"
            folder = out / sid
            folder.mkdir()
            history = _history(run_dir, env.env_id, snap.step, record)
            write_json_atomic(folder / fmt.RECORD, {"record": fmt.record_to_json(record),
                                                    "history": [fmt.record_to_json(h) for h in history]})
            states = _thin(_visit(learner, config, env, snap.step, episodes, seed + 1000 * i), max_states)
            np.savez_compressed(folder / fmt.ARRAYS, **_arrays(learner, ref, states, env, seed + i))
            torch.save(learner.algorithm.policy.state_dict(), folder / fmt.NETWORKS)
            entries.append({"id": sid, "step": snap.step, "episode_index": record.episode_index,
                            "episode_return": record.episode_return, "states": len(states)})
            echo(f"{sid}: env step {snap.step}, return {record.episode_return:g}, {len(states)} states")
    finally:
        ref.close()
        learner.close()
    manifest = {
        "format": fmt.FORMAT, "version": fmt.VERSION, "env_id": env.env_id, "algo": config.algo,
        "action_spec": fmt.spec_to_json(env.spec), "source_run": str(run_dir.resolve()),
        "reference": {"step": reference.step, "networks": fmt.REFERENCE_NETWORKS, "config": fmt.CONFIG},
        "visit": {"episodes": episodes, "max_states": max_states, "seed": seed}, "scenarios": entries,
    }
    write_json_atomic(out / fmt.MANIFEST, json.loads(json.dumps(manifest)))  # last: marks a complete set
    return manifest
