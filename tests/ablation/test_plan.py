"""Expanding a spec into runs and their ``train`` arguments."""

from __future__ import annotations

from pathlib import Path

from explorer_pipeline.ablation.plan import env_slug, expand
from explorer_pipeline.ablation.spec import parse_spec

SPEC = """
name: x
base: {algo: dqn, steps: 300, provider: scripted, eval_episodes: 2, response_cache: cache.sqlite,
       options: {latency: 0}}
arms:
  - name: paper
  - {name: single, prompt_set: single-stage, k: 2, m: 50, mode: blocking, replay: true}
  - {name: baseline, provider: none}
environments: [CartPole-v1, ALE/Pong-v5]
seeds: [3, 7]
"""


def test_arms_times_envs_times_seeds_with_paired_seeds(tmp_path: Path):
    spec, _ = parse_spec(SPEC)
    runs = expand(spec, tmp_path)
    assert len(runs) == 3 * 2 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    # paired: every (env, seed) cell has every arm, with the same --seed
    for env in ("CartPole-v1", "ALE/Pong-v5"):
        for seed in (3, 7):
            cell = [r for r in runs if r.env == env and r.seed == seed]
            assert sorted(r.arm for r in cell) == ["baseline", "paper", "single"]
            assert {r.arguments(tmp_path)[r.arguments(tmp_path).index("--seed") + 1] for r in cell} == {str(seed)}
    # ordered seed by seed, so a study stopped early holds every arm
    assert [r.seed for r in runs[:6]] == [3] * 6


def test_train_arguments(tmp_path: Path):
    spec, _ = parse_spec(SPEC)
    single = next(r for r in expand(spec, tmp_path) if r.arm == "single")
    args = single.arguments(tmp_path / "out")
    assert args[:4] == ["--env", "CartPole-v1", "--seed", "3"]
    pairs = dict(zip(args[4::2], args[5::2], strict=False))
    assert pairs["--algo"] == "dqn" and pairs["--steps"] == "300" and pairs["--prompt-set"] == "single-stage"
    assert pairs["--k"] == "2" and pairs["--m"] == "50" and pairs["--mode"] == "blocking"
    assert pairs["--eval-episodes"] == "2"
    assert pairs["--response-cache"] == str(tmp_path / "cache.sqlite")  # relative to the spec's directory
    assert "--replay" in args and args[args.index("--option"):args.index("--option") + 2] == ["--option", "latency=0"]
    assert args[-2:] == ["--out", str(tmp_path / "out")]


def test_fingerprints_and_directories(tmp_path: Path):
    spec, _ = parse_spec(SPEC)
    runs = expand(spec, tmp_path)
    assert len({r.fingerprint for r in runs}) == len(runs)
    changed, _ = parse_spec(SPEC.replace("steps: 300", "steps: 400"))
    assert {r.fingerprint for r in expand(changed, tmp_path)}.isdisjoint({r.fingerprint for r in runs})
    pong = next(r for r in runs if r.env == "ALE/Pong-v5" and r.arm == "paper" and r.seed == 7)
    assert pong.relpath == Path("runs/paper/ALE_Pong-v5/seed-7")
    assert env_slug("mymod:My-Env-v0") == "mymod_My-Env-v0"
