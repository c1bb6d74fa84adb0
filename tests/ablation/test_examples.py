"""Every example spec in examples/ is valid against the installed plugins, gymnasium and the run
configuration the real train command resolves (``load_spec`` resolves every arm x environment)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from explorer_ablation.plan import expand
from explorer_ablation.spec import load_spec, run_document

from .helpers import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("ablation-*.yaml"))


@cache
def loaded(path: Path):
    """``load_spec`` once per file (the full paper comparison resolves 260 configurations); the
    tests below only read the spec."""
    return load_spec(path)


def test_the_issue_asks_for_the_prompt_ablation_the_control_arms_and_the_paper_setting():
    names = {path.name for path in EXAMPLES}
    assert {"ablation-prompts.yaml", "ablation-controls.yaml", "ablation-paper-atari.yaml"} <= names
    assert {"ablation-paper-atari-full.yaml", "ablation-paper-atari-small.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_spec_is_valid(path: Path):
    spec = loaded(path)  # names and every arm x environment configuration
    runs = expand(spec, path.parent)
    assert len(runs) == len(spec.arms) * len(spec.environments) * len(spec.seeds)
    assert spec.baseline_arm is not None
    assert spec.settings(spec.baseline_arm)["provider"] == "none"


def test_the_paper_atari_example_resolves_to_the_papers_settings():
    from tianshou_integration.config import resolve

    path = ROOT / "examples/ablation-paper-atari.yaml"
    spec = load_spec(path)
    resolved = {}
    for arm in spec.arms:
        document = run_document(spec, arm, 0, 0, path.parent).data
        overrides = [((key,), value, "") for key, value in document.items()]
        if "provider" not in document.get("explorer", {}):
            overrides.append((("explorer", "provider"), "scripted", ""))
        resolved[arm.name] = resolve(overrides=overrides)
    paper = resolved["paper"]
    assert paper.env == "ALE/Pong-v5" and paper.preset == "paper" and paper.steps == 310_000
    assert paper.algorithm.batch_size == 256 and paper.algorithm.epsilon.schedule == "multiplicative"
    assert resolved["baseline"].baseline and not paper.baseline
    linear = resolved["paper-linear-eps"].algorithm.epsilon
    assert linear.schedule == "linear" and linear.decay_steps == 230_000
    # the linear schedule reaches the paper's floor about when the multiplicative one does
    assert abs(paper.algorithm.epsilon.at(230_000) - linear.at(230_000)) < 0.01
    assert resolved["paper-linear-eps"].algorithm.model_copy(update={"epsilon": paper.algorithm.epsilon}) \
        == paper.algorithm  # nothing else differs


def test_the_guidance_controls_advise_towards_and_away_from_the_goal():
    """The positive control favours the moves that lead to FrozenLake's goal (down, right), the
    negative one the moves away from it, by the env's own action numbers and our task labels."""
    import json

    from gymnasium.envs.toy_text import frozen_lake

    from explorer_pipeline.resources import prompts_dir
    from explorer_pipeline.tasks import load_task_file

    path = ROOT / "examples" / "ablation-guidance.yaml"
    spec = load_spec(path)
    env_id = spec.environments[0].id
    labels = {t.env_id: t for t in load_task_file(prompts_dir() / "tasks" / "toy_text.yaml")}[env_id].action_labels
    assert labels[frozen_lake.DOWN] == "move down" and labels[frozen_lake.RIGHT] == "move right"
    favoured = {}
    for arm in ("good-advice", "bad-advice"):
        probs = json.loads(spec.settings(arm)["options"]["reply"])["probabilities"]
        favoured[arm] = {i for i, p in enumerate(probs) if p == max(probs)}
    assert favoured["good-advice"] == {frozen_lake.DOWN, frozen_lake.RIGHT}
    assert favoured["bad-advice"] == {frozen_lake.LEFT, frozen_lake.UP}


ATARI_100K = {"Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout",
              "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero", "Jamesbond",
              "Kangaroo", "Krull", "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert", "RoadRunner", "Seaquest",
              "UpNDown"}


@pytest.mark.parametrize("name", ["ablation-paper-atari-full.yaml", "ablation-paper-atari-small.yaml"])
def test_the_paper_comparison_has_every_algorithm_with_and_without_the_llm_and_both_baselines(name):
    from explorer_pipeline.resources import prompts_dir
    from explorer_pipeline.tasks import load_task_file
    from tianshou_integration.config import resolve

    path = ROOT / "examples" / name
    spec = loaded(path)
    arms = {(spec.settings(arm)["algo"], spec.settings(arm)["provider"] != "none") for arm in spec.arms}
    assert arms == {(algo, llm) for algo in ("dqn", "dueling-dqn", "rainbow", "curl") for llm in (False, True)} | {
        ("noisy-dqn", False), ("rnd-dqn", False)}
    assert spec.baseline_arm == "dqn" and spec.metric == "train"  # the paper reports training returns
    games = {env.id.removeprefix("ALE/").removesuffix("-v5") for env in spec.environments}
    described = {t.env_id for t in load_task_file(prompts_dir() / "tasks" / "atari.yaml")}
    assert all(f"ALE/{game}-v5" in described for game in games)  # every LLM arm has its game's description
    assert all(env.min_score is not None and env.max_score > env.min_score for env in spec.environments)
    if name.endswith("full.yaml"):
        assert games == ATARI_100K and len(spec.seeds) == 5 and len(expand(spec, path.parent)) == 10 * 26 * 5
    resolved = {}
    for arm in ("dqn-llm", "noisy-dqn", "rnd-dqn", "dueling-dqn"):
        document = run_document(spec, spec.arm(arm), 0, 0, path.parent).data
        resolved[arm] = resolve(overrides=[((key,), value, "") for key, value in document.items()])
    assert resolved["noisy-dqn"].algorithm.epsilon.start == 0.0 and resolved["noisy-dqn"].algorithm.noisy_std == 1.0
    assert resolved["rnd-dqn"].algorithm.rnd.coef == 0.1 and resolved["rnd-dqn"].algorithm.epsilon.start == 1.0
    assert resolved["dqn-llm"].explorer.mode == "blocking" and not resolved["dqn-llm"].baseline
    assert resolved["dqn-llm"].episodes == 500 and resolved["dueling-dqn"].episodes == 800
