"""Expanding a spec into runs, their configuration documents and ``train`` arguments."""

from __future__ import annotations

from pathlib import Path

import yaml

from explorer_ablation.plan import env_slug, expand
from explorer_ablation.spec import parse_spec

SPEC = """
name: x
base: {algo: dqn, steps: 300, provider: scripted, eval_episodes: 2, response_cache: cache.sqlite,
       options: {latency: 0}}
arms:
  - name: paper
  - {name: single, prompt_set: single-stage, k: 2, m: 50, mode: blocking, replay: true, temperature: 0.5,
     model: m1, base_url: "http://h/v1", sigma: 0.2, task_description: "@tasks/t.txt", preset: paper}
  - name: baseline
    provider: none
    config: {algorithm: {lr: 0.0005, epsilon: {schedule: multiplicative}}, network: {hidden_sizes: [64]}}
environments: [CartPole-v1, ALE/Pong-v5]
seeds: [3, 7]
"""


def test_arms_times_envs_times_seeds_with_paired_seeds(tmp_path: Path):
    spec, _ = parse_spec(SPEC)
    runs = expand(spec, tmp_path)
    assert len(runs) == 3 * 2 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    # paired: every (env, seed) cell has every arm, with the same seed in its configuration
    for env in ("CartPole-v1", "ALE/Pong-v5"):
        for seed in (3, 7):
            cell = [r for r in runs if r.env == env and r.seed == seed]
            assert sorted(r.arm for r in cell) == ["baseline", "paper", "single"]
            assert {(r.config["env"], r.config["seed"]) for r in cell} == {(env, seed)}
    # ordered seed by seed, so a study stopped early holds every arm
    assert [r.seed for r in runs[:6]] == [3] * 6


def test_each_shortcut_lands_where_the_train_command_puts_its_flag(tmp_path: Path):
    spec, _ = parse_spec(SPEC)
    single = next(r for r in expand(spec, tmp_path) if r.arm == "single")
    assert single.config == {
        "env": "CartPole-v1", "seed": 3, "preset": "paper", "algo": "dqn", "steps": 300,
        "explorer": {"provider": "scripted", "response_cache": str(tmp_path / "cache.sqlite"),  # spec-relative
                     "provider_options": {"latency": 0}, "model": "m1", "base_url": "http://h/v1",
                     "prompt_set": "single-stage", "every_k": 2, "sample_m": 50, "temperature": 0.5,
                     "mode": "blocking", "task_description": "@" + str(tmp_path / "tasks/t.txt"), "replay": True},
        "eval": {"episodes": 2},
        "algorithm": {"noise": {"sigma": 0.2}},
    }
    assert single.settings["k"] == 2 and single.settings["provider"] == "scripted" and single.steps == 300
    baseline = next(r for r in expand(spec, tmp_path) if r.arm == "baseline")
    assert baseline.config["algorithm"] == {"lr": 0.0005, "epsilon": {"schedule": "multiplicative"}}
    assert baseline.config["network"] == {"hidden_sizes": [64]}
    assert baseline.config["explorer"]["provider"] == "none" and baseline.settings["provider"] == "none"


def test_train_arguments_and_the_configuration_file(tmp_path: Path):
    spec, _ = parse_spec(SPEC)
    run = next(r for r in expand(spec, tmp_path) if r.arm == "baseline" and r.env == "ALE/Pong-v5" and r.seed == 7)
    config_file = tmp_path / "study/configs/baseline__ALE_Pong-v5__seed-7.yaml"
    assert run.arguments(tmp_path / "study") == [
        "--config", str(config_file), "--out", str(tmp_path / "study/runs/baseline/ALE_Pong-v5/seed-7")]
    text = run.config_yaml("x")
    assert text.startswith("# run baseline/ALE/Pong-v5/seed-7 of ablation study 'x'")
    assert yaml.safe_load(text) == run.config
    assert list(yaml.safe_load(text))[:2] == ["env", "seed"]  # readable order: what, then how


def test_fingerprints_cover_the_whole_configuration(tmp_path: Path):
    spec, _ = parse_spec(SPEC)
    runs = expand(spec, tmp_path)
    assert len({r.fingerprint for r in runs}) == len(runs)
    changes = (("steps: 300", "steps: 400"), ("lr: 0.0005", "lr: 0.0004"), ("hidden_sizes: [64]", "hidden_sizes: [65]"))
    for old, new in changes:
        changed, _ = parse_spec(SPEC.replace(old, new))
        before = {r.run_id: r.fingerprint for r in runs}
        after = {r.run_id: r.fingerprint for r in expand(changed, tmp_path)}
        differ = {run_id for run_id in before if before[run_id] != after[run_id]}
        assert differ == ({r.run_id for r in runs} if old.startswith("steps") else
                          {r.run_id for r in runs if r.arm == "baseline"}), old
    moved = expand(spec, tmp_path / "elsewhere")  # the response cache is another file
    assert {r.fingerprint for r in moved}.isdisjoint({r.fingerprint for r in runs})
    pong = next(r for r in runs if r.env == "ALE/Pong-v5" and r.arm == "paper" and r.seed == 7)
    assert pong.relpath == Path("runs/paper/ALE_Pong-v5/seed-7")
    assert pong.log_relpath == Path("logs/paper__ALE_Pong-v5__seed-7.log")
    assert env_slug("mymod:My-Env-v0") == "mymod_My-Env-v0"
