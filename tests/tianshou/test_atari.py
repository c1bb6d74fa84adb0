"""Atari and MuJoCo end to end: real ALE and MuJoCo environments through the run configuration.

Sized for CI: a couple of thousand Atari steps with few gradient steps, a few hundred MuJoCo steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.types import ExplorationUpdate, Provenance
from tianshou_integration import EnvStepCounter, EpisodeTap, build_setup, describe_env
from tianshou_integration.cli import train as train_command
from tianshou_integration.config import make_config
from tianshou_integration.training import train

BREAKOUT = "ALE/Breakout-v5"
SMALL_ATARI = {  # the paper preset's structure, shrunk: few gradient steps, one short evaluation
    "algorithm.buffer_size": 3000, "algorithm.batch_size": 32, "algorithm.learning_starts": 1200,
    "algorithm.updates_per_step": 0.1, "eval.episodes": 1, "eval.every": 100_000,
    "algorithm.epsilon.eval": 1.0,  # a random evaluation episode ends in a few hundred steps
}


def invoke(*args: str):
    return CliRunner().invoke(train_command, list(args), catch_exceptions=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_breakout_dqn_paper_preset_through_the_cli(tmp_path):
    out = tmp_path / "breakout"
    sets = [a for key, value in SMALL_ATARI.items() for a in ("--set", f"{key}={value}")]
    result = invoke("--env", BREAKOUT, "--algo", "dqn", "--preset", "paper", "--steps", "1500",
                    "--provider", "scripted", *sets, "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] >= 1500 and summary["gradient_steps"] > 0 and summary["episodes"] >= 1
    assert summary["preset"] == "paper" and summary["updates_applied"] >= 1
    assert summary["final_eval_return"] is not None
    for name in ("manifest.json", "config.yaml", "metrics.csv", "updates.jsonl", "exchanges.jsonl",
                 "learning_curve.png", "exploration.png"):
        assert (out / name).stat().st_size > 0, name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["algorithm"]["epsilon"]["schedule"] == "multiplicative"
    assert manifest["explorer"]["action_spec"]["n"] == 4
    assert [label.split(":")[0] for label in manifest["explorer"]["action_spec"]["labels"]] == \
        ["NOOP", "FIRE", "RIGHT", "LEFT"]
    updates = [u for u in read_jsonl(out / "updates.jsonl") if u["source"] == "llm"]
    assert updates and all(len(u["values"]) == 4 for u in updates)


def guided(config, info, values):
    cache = ExplorationCache(info.spec)
    counter = EnvStepCounter()
    setup = build_setup(config, info, cache=cache, counter=counter)
    update = ExplorationUpdate(version=1, kind=info.spec.update_kind, values=tuple(values),
                               provenance=Provenance(source_episode=0))
    cache.publish(update)
    return setup, cache, counter


@pytest.mark.parametrize("algo", ["rainbow", "c51", "qrdqn", "dueling-dqn", "double-dqn"])
def test_atari_frames_are_stacked_uint8_and_exploration_follows_the_cache(algo):
    """Frames stored once as uint8, stacked (4, 84, 84) on sampling; the guided draw covers all of
    ALE's actions in the cache's proportions."""
    info = describe_env(BREAKOUT)
    assert info.obs_shape == (4, 84, 84) and info.spec.labels == ("NOOP", "FIRE", "RIGHT", "LEFT")
    config = make_config(BREAKOUT, algo, {**SMALL_ATARI, "algorithm.epsilon.schedule": "linear",
                                          "algorithm.epsilon.start": 1.0, "algorithm.epsilon.end": 1.0,
                                          "algorithm.learning_starts": 700, "test_envs": 1},
                         preset="paper", describe=lambda _: info)
    probs = (0.1, 0.2, 0.3, 0.4)
    setup, cache, counter = guided(config, info, probs)
    tap = EpisodeTap(None, BREAKOUT, info.spec, counter=counter)
    result = train(setup, steps=800, eval_episodes=1, tap=tap, progress=False)
    assert result.env_steps >= 800 and result.gradient_steps > 0
    buffer = setup.buffer
    assert buffer.obs.dtype == np.uint8 and buffer.obs.shape[1:] == (84, 84)  # one frame per transition
    batch, _ = buffer.sample(16)
    assert batch.obs.shape == (16, 4, 84, 84) and batch.obs.dtype == np.uint8
    assert batch.obs_next.shape == (16, 4, 84, 84)
    actions = buffer.act[buffer.sample_indices(0)]
    counts = np.bincount(actions, minlength=4) / len(actions)
    assert set(np.unique(actions)) == {0, 1, 2, 3}
    # with the floor the runtime would add (none here) the draw follows the published distribution
    assert np.allclose(counts, probs, atol=0.06), counts
    assert cache.applied_at(1) is not None
    setup.close()


def test_game_outside_the_builtin_descriptions_needs_and_takes_a_task_description(tmp_path):
    game = "ALE/SpaceInvaders-v5"
    result = invoke("--env", game, "--algo", "dqn", "--provider", "scripted", "--steps", "400",
                    "--out", str(tmp_path / "none"))
    assert result.exit_code == 2 and "--task-description" in result.output
    assert not (tmp_path / "none").exists()
    out = tmp_path / "space"
    result = invoke("--env", game, "--algo", "dqn", "--provider", "scripted", "--steps", "1500",
                    "--mode", "blocking", "--task-description", "Shoot the descending invaders; avoid their bombs.",
                    "--set", "algorithm.learning_starts=10000", "--set", "eval.episodes=1",
                    "--set", "algorithm.buffer_size=2000", "--out", str(out))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["explorer"]["action_spec"]["labels"] == ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE",
                                                              "LEFTFIRE"]
    exchanges = (out / "exchanges.jsonl").read_text()
    assert "Shoot the descending invaders" in exchanges


def test_paper_epsilon_at_every_step_is_the_multiplicative_schedule():
    info = describe_env(BREAKOUT)
    config = make_config(BREAKOUT, "dqn", {**SMALL_ATARI, "algorithm.learning_starts": 100_000, "test_envs": 1},
                         preset="paper", describe=lambda _: info)
    setup = build_setup(config, info, cache=ExplorationCache(info.spec))
    seen: dict[int, float] = {}
    schedule = setup.on_env_step

    def record(step: int) -> None:
        schedule(step)
        seen[step] = setup.policy.eps_training

    setup.on_env_step = record  # type: ignore[method-assign]
    train(setup, steps=300, eval_episodes=1, progress=False)
    setup.close()
    assert sorted(seen) == list(range(300))  # one env, one step per collect: ε set before every step
    for step, eps in seen.items():
        assert eps == pytest.approx(max(0.1, 0.99999 ** step), rel=1e-12)


def test_hopper_td3_paper_preset(tmp_path):
    out = tmp_path / "hopper"
    result = invoke("--env", "Hopper-v5", "--algo", "td3", "--preset", "paper", "--steps", "400",
                    "--provider", "scripted", "--mode", "blocking", "--set", "eval.episodes=1", "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["algorithm"]["updates_per_step"] == 10.0 and config["network"]["hidden_sizes"] == [400, 300]
    assert summary["gradient_steps"] >= 10 * (400 - 256) - 10
    assert summary["updates_applied"] >= 1
    updates = [u for u in read_jsonl(out / "updates.jsonl") if u["source"] == "llm"]
    assert updates and all(len(u["values"]) == 3 for u in updates)


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Walker2d-v5", "Humanoid-v5", "HumanoidStandup-v5"])
def test_paper_mujoco_tasks_run_with_ddpg_and_sac(env_id, tmp_path):
    for algo in ("ddpg", "sac"):
        out = tmp_path / algo
        result = invoke("--env", env_id, "--algo", algo, "--preset", "paper", "--steps", "300",
                        "--provider", "none", "--set", "algorithm.learning_starts=200", "--set", "eval.episodes=1",
                        "--set", "algorithm.batch_size=64", "--out", str(out))
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["env_steps"] >= 300 and summary["gradient_steps"] > 0
