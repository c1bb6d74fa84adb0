"""The run configuration: presets, resolution order, round trip, and bad input naming its key."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tianshou_integration.cli import train
from tianshou_integration.config import (
    ConfigError,
    RunConfig,
    dump_config,
    make_config,
    preset_values,
    resolve,
)

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str):
    return CliRunner().invoke(train, list(args), catch_exceptions=False)


# --------------------------------------------------------------------------- presets
def test_default_preset_keeps_the_tuned_cartpole_settings():
    config = make_config("CartPole-v1", "dqn")
    hp = config.algorithm
    assert config.preset == "default" and config.steps == 20_000 and config.train_envs == 8
    assert (hp.lr, hp.batch_size, hp.target_update_freq, hp.collect_per_step) == (1e-3, 128, 10, 256)
    assert (hp.epsilon.schedule, hp.epsilon.end, hp.epsilon.decay_steps) == ("linear", 0.04, 8000)
    assert config.network.hidden_sizes == (256, 256) and config.device == "cpu"
    rainbow = make_config("CartPole-v1", "rainbow").algorithm
    assert rainbow.prioritized.enabled and rainbow.n_step == 3 and rainbow.epsilon.end == 0.01


def test_paper_preset_atari_settings():
    config = make_config("ALE/Breakout-v5", "dqn", preset="paper")
    hp = config.algorithm
    assert config.steps == 310_000 and config.device == "auto" and config.train_envs == 1
    assert (hp.lr, hp.gamma, hp.batch_size, hp.buffer_size, hp.learning_starts) == (1e-4, 0.99, 256, 10_000, 10_000)
    assert hp.target_update_freq == 1000 and hp.huber_loss_delta is None  # MSE
    assert hp.collect_per_step == 1 and hp.updates_per_step == 1.0
    for t in (0, 1, 1000, 50_000, 100_000, 230_000, 300_000):
        assert hp.epsilon.at(t) == pytest.approx(max(0.1, 0.99999 ** t), rel=1e-12)
    assert hp.epsilon.at(100_000) == pytest.approx(0.368, abs=1e-3)
    rainbow = make_config("ALE/Breakout-v5", "rainbow", preset="paper").algorithm
    assert (rainbow.num_atoms, rainbow.v_min, rainbow.v_max, rainbow.n_step) == (51, -10.0, 10.0, 3)
    assert rainbow.prioritized.enabled and (rainbow.prioritized.alpha, rainbow.prioritized.beta) == (0.5, 0.4)
    assert rainbow.adam_eps == 1.5e-4 and rainbow.noisy_std == 0.1


def test_paper_preset_mujoco_settings():
    td3 = make_config("Hopper-v5", "td3", preset="paper")
    hp = td3.algorithm
    assert td3.network.hidden_sizes == (400, 300) and (hp.lr, hp.critic_lr) == (1e-5, 1e-4)
    assert (hp.batch_size, hp.buffer_size, hp.tau, hp.random_warmup_steps) == (256, 10_000, 0.005, 0)
    assert hp.updates_per_step == 10.0 and (hp.policy_noise, hp.noise_clip, hp.update_actor_freq) == (0.2, 0.5, 2)
    assert (hp.noise.sigma, hp.noise.units) == (0.1, "env")
    assert make_config("Hopper-v5", "ddpg", preset="paper").algorithm.updates_per_step == 1.0


def test_sigma_in_env_units_is_converted_per_dimension():
    from tianshou_integration.algorithms import noise_sigma
    from tianshou_integration.envs import describe_env

    info = describe_env("Humanoid-v5")  # every action dimension spans [-0.4, 0.4]
    config = make_config("Humanoid-v5", "td3", preset="paper", describe=lambda _: info)
    sigma = noise_sigma(config, info)
    assert sigma.shape == (info.spec.n,) and sigma == pytest.approx([0.1 / 0.4] * info.spec.n)
    normalised = make_config("Humanoid-v5", "td3", {"algorithm.noise.units": "normalized"},
                             describe=lambda _: info)
    assert noise_sigma(normalised, info) == pytest.approx(0.1)


def test_paper_preset_falls_back_to_default_outside_its_benchmarks():
    assert preset_values("paper", "CartPole-v1", "dqn", discrete=True) == \
        preset_values("default", "CartPole-v1", "dqn", discrete=True)


# --------------------------------------------------------------------------- resolution order
def test_file_then_flags_then_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("env: CartPole-v1\nalgo: dqn\nsteps: 3000\nseed: 4\n"
                    "algorithm:\n  lr: 0.002\n  epsilon: {schedule: multiplicative, factor: 0.999}\n")
    config = resolve(file=path, overrides=[(("steps",), 500, "--steps"),
                                           (("algorithm", "lr"), 0.005, "--set algorithm.lr=0.005")])
    assert config.steps == 500 and config.seed == 4 and config.algorithm.lr == 0.005
    assert config.algorithm.epsilon.schedule == "multiplicative" and config.algorithm.epsilon.factor == 0.999
    assert config.algorithm.batch_size == 128  # from the preset, untouched


def test_show_config_prints_a_file_that_resolves_to_the_same_config(tmp_path):
    result = invoke("--env", "CartPole-v1", "--algo", "c51", "--provider", "scripted", "--k", "3",
                    "--set", "network.hidden_sizes=[64, 32]", "--set", "algorithm.v_max=50", "--show-config")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.output)
    assert data["explorer"]["every_k"] == 3 and data["network"]["hidden_sizes"] == [64, 32]
    assert data["algorithm"]["v_max"] == 50
    path = tmp_path / "config.yaml"
    path.write_text(result.output)
    again = resolve(file=path)
    assert again == RunConfig.model_validate(data)
    assert dump_config(again) == result.output


def test_config_file_round_trip_reruns_the_same_run(tmp_path):
    """A run's config.yaml given back to --config reproduces its metrics (blocking mode, scripted)."""
    first = tmp_path / "first"
    result = invoke("--env", "CartPole-v1", "--algo", "dqn", "--steps", "1200", "--seed", "2",
                    "--provider", "scripted", "--mode", "blocking",
                    "--set", "eval.every=600", "--set", "eval.episodes=2", "--out", str(first))
    assert result.exit_code == 0, result.output
    second = tmp_path / "second"
    result = invoke("--config", str(first / "config.yaml"), "--out", str(second))
    assert result.exit_code == 0, result.output
    assert (first / "config.yaml").read_text() == (second / "config.yaml").read_text()
    metrics = (first / "metrics.csv").read_text()
    assert len(metrics.splitlines()) > 10
    assert metrics == (second / "metrics.csv").read_text()
    updates = [line.split('"latency_s"')[0] for line in (first / "updates.jsonl").read_text().splitlines()]
    again = [line.split('"latency_s"')[0] for line in (second / "updates.jsonl").read_text().splitlines()]
    assert updates and len(updates) == len(again)


def test_existing_run_directory_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("precious\n")
    result = invoke("--env", "CartPole-v1", "--algo", "dqn", "--provider", "none", "--steps", "100",
                    "--out", str(out))
    assert result.exit_code == 2 and "already exists" in result.output
    assert (out / "metrics.csv").read_text() == "precious\n"


# --------------------------------------------------------------------------- bad input
def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "explorer_pipeline", "train", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


BAD_FILES = [
    ("env: CartPole-v1\nalgo: dqn\nalgorithm:\n  lrr: 0.1\n", "bad.yaml:4: unknown key 'algorithm.lrr'"),
    ("env: CartPole-v1\nalgo: dqn\nalgorithm:\n  batch_size: many\n", "bad.yaml:4: algorithm.batch_size is invalid"),
    ("env: CartPole-v1\nalgo: dqn\n\nalgorithm:\n  epsilon:\n    end: 1.5\n",
     "bad.yaml:6: algorithm.epsilon.end must be <= 1"),
    ("env: Pendulum-v1\nalgo: dqn\n", "bad.yaml:2: algo: dqn needs discrete actions"),
    ("env: CartPole-v1\nalgo: dqn\nexplorer: {every_k: 0}\n", "bad.yaml:3: explorer.every_k must be >= 1"),
    ("env: CartPole-v1\nalgo: dqn\npreset: fast\n", "bad.yaml:3: preset: unknown preset 'fast'"),
    ("env: CartPole-v1\nalgo: dqn\nalgo: c51\n", "duplicate key 'algo'"),
    ("env: CartPole-v1\nalgo: dqn\ndevice: tpu\n", "bad.yaml:3: device must be one of auto, cpu or cuda (got 'tpu')"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_configuration_file_exits_2_naming_file_line_and_key(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    done = run_cli("--config", "bad.yaml", "--out", "never", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: invalid configuration"), done.stderr
    assert message in lines[0]
    assert done.stdout == "" and not (tmp_path / "never").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "algorithm.nope=1"], "--set algorithm.nope=1: unknown key 'algorithm.nope'; allowed: lr,"),
    (["--set", "network.hidden_sizes=[0]"], "network.hidden_sizes"),
    (["--set", "novalue"], "--set needs dotted.key=value"),
    (["--preset", "fast"], "--preset: preset: unknown preset 'fast'; available: default, paper"),
    (["--steps", "0"], "--steps: steps must be >= 1 (got 0)"),
    (["--device", "cuda"], "no GPU"),
])
def test_bad_overrides_exit_2_naming_the_flag(args, message, tmp_path):
    result = invoke("--env", "CartPole-v1", "--algo", "dqn", "--provider", "none", *args,
                    "--out", str(tmp_path / "never"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "never").exists()


def test_missing_env_and_algo_are_named():
    with pytest.raises(ConfigError) as info:
        resolve()
    assert "env: missing" in str(info.value) and "algo: missing" in str(info.value)


def test_every_field_is_documented():
    """Each field of the configuration carries a docstring or a documented section type."""
    from pydantic import BaseModel

    def walk(model: type[BaseModel], prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                missing += walk(annotation, f"{prefix}{name}.")
                if not (annotation.__doc__ or "").strip():
                    missing.append(prefix + name)
            elif not (field.description or "").strip():
                missing.append(prefix + name)
        return missing

    assert walk(RunConfig, "") == []
    assert math.isfinite(make_config("CartPole-v1", "dqn").algorithm.lr)


# --------------------------------------------------------------------------- what the configuration builds
def test_prioritised_beta_is_annealed_over_the_runs_own_length():
    from explorer_pipeline.cache import ExplorationCache
    from tianshou_integration import build_setup, describe_env

    info = describe_env("CartPole-v1")
    config = make_config("CartPole-v1", "rainbow", {"steps": 4000, "test_envs": 1,
                                                     "algorithm.prioritized.beta": 0.4}, describe=lambda _: info)
    setup = build_setup(config, info, cache=ExplorationCache(info.spec))
    try:
        for step, beta in ((0, 0.4), (1000, 0.55), (2000, 0.7), (4000, 1.0), (8000, 1.0)):
            setup.on_env_step(step)
            assert setup.buffer._beta == pytest.approx(beta), step
    finally:
        setup.close()


def test_sac_actor_standard_deviation_depends_on_the_state():
    import torch

    from explorer_pipeline.cache import ExplorationCache
    from tianshou_integration import build_setup, describe_env

    info = describe_env("Pendulum-v1")
    config = make_config("Pendulum-v1", "sac", {"test_envs": 1}, describe=lambda _: info)
    setup = build_setup(config, info, cache=ExplorationCache(info.spec))
    try:
        actor = setup.policy.actor
        assert not hasattr(actor, "sigma_param") or actor._c_sigma
        obs = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 8.0]])
        (_, sigma_a), _ = actor(obs[:1])
        (_, sigma_b), _ = actor(obs[1:])
        assert not torch.allclose(sigma_a, sigma_b)  # a state-independent σ would be equal
    finally:
        setup.close()
