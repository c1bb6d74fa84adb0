"""The ablation spec: structure, consistency and name checks, each error with its location."""

from __future__ import annotations

import textwrap

import pytest

from explorer_ablation.spec import SpecError, check_names, parse_spec, run_document

GOOD = """
name: prompts
base:
  algo: dqn
  steps: 300
  provider: scripted
  prompt_set: paper
  options: {latency: 0, reply: "x"}
arms:
  - name: paper
  - name: name-only
    prompt_set: name-only
    options: {latency: 0.1}
  - name: baseline
    provider: none
environments: [CartPole-v1, {id: Acrobot-v1, max_score: -100}]
seeds: 3
"""


def parse(text: str):
    return parse_spec(textwrap.dedent(text).lstrip(), source="spec.yaml")


def problems(text: str, **names) -> list[str]:
    with pytest.raises(SpecError) as info:
        spec, doc = parse(text)
        if names:
            check_names(spec, doc, source="spec.yaml", **names)
    assert not info.value.problems or all(p.position is not None for p in info.value.problems)
    return [p.format("spec.yaml") for p in info.value.problems]


NAMES = dict(providers=["scripted", "local"], prompt_sets=["paper", "name-only"],
             env_exists=lambda env: None if env in ("CartPole-v1", "Acrobot-v1") else f"unknown environment {env!r}")


def test_a_good_spec_resolves_arms_over_the_base():
    spec, _ = parse(GOOD)
    assert spec.seeds == [0, 1, 2]
    assert spec.baseline_arm == "baseline"  # the arm named baseline, by default
    assert spec.settings("paper") == {"algo": "dqn", "steps": 300, "provider": "scripted", "prompt_set": "paper",
                                      "options": {"latency": 0, "reply": "x"}}
    name_only = spec.settings("name-only")
    assert name_only["prompt_set"] == "name-only"
    assert name_only["options"] == {"latency": 0.1, "reply": "x"}  # merged key by key
    assert spec.settings("baseline")["provider"] == "none"
    assert spec.environments[1].max_score == -100
    check_names(spec, parse(GOOD)[1], **NAMES)  # no problem


def test_unknown_keys_and_wrong_types_are_reported_with_line_and_column():
    found = problems("""
        name: x
        base:
          algo: dqn
          steps: "300"
          prompt_st: paper
        arms:
          - name: a
        environments: [CartPole-v1]
        seeds: 1
        colour: blue
        """)
    assert any(p.startswith("spec.yaml:4:3: base.steps:") and "integer" in p and "'300'" in p for p in found), found
    assert any(p.startswith("spec.yaml:5:3: base.prompt_st: unknown field 'prompt_st'") and "prompt_set" in p
               for p in found), found
    assert any(p.startswith("spec.yaml:10:1: colour: unknown field") for p in found), found


def test_an_arm_overriding_a_field_that_does_not_exist():
    (found,) = problems("""
        name: x
        base: {algo: dqn}
        arms:
          - name: a
          - name: b
            temprature: 0.3
        environments: [CartPole-v1]
        seeds: 1
        """)
    assert found.startswith("spec.yaml:6:5: arms[1].temprature: unknown field 'temprature'; an arm can override:")
    assert "temperature" in found


def test_duplicate_arm_names_seeds_and_environments():
    found = problems("""
        name: x
        base: {algo: dqn}
        arms:
          - name: a
          - name: a
        environments: [CartPole-v1, CartPole-v1]
        seeds: [0, 1, 1]
        baseline: nope
        """)
    assert "spec.yaml:5:5: arms[1].name: duplicate arm name 'a' (also arms[0])" in found
    assert "spec.yaml:6:29: environments[1]: duplicate environment 'CartPole-v1'" in found
    assert "spec.yaml:7:1: seeds: duplicate seeds [1]" in found
    assert any(p.startswith("spec.yaml:8:1: baseline: no arm named 'nope'") for p in found), found


def test_duplicate_yaml_keys_are_an_error_not_last_one_wins():
    (found,) = problems("""
        name: x
        base: {algo: dqn}
        arms: [{name: a}]
        environments: [CartPole-v1]
        seeds: 1
        seeds: 2
        """)
    assert found == "spec.yaml:6:1: duplicate key 'seeds' (first given at line 5)"


def test_unknown_environment_provider_and_prompt_set():
    found = problems("""
        name: x
        base: {algo: dqn, provider: scripted}
        arms:
          - name: a
            prompt_set: nope
          - name: b
            provider: gpt
        environments: [CartPole-v1, Nope-v0]
        seeds: 1
        """, **NAMES)
    assert any(p.startswith("spec.yaml:5:5: arms[0].prompt_set: unknown prompt set 'nope'; available:") for p in found)
    assert any(p.startswith("spec.yaml:7:5: arms[1].provider: unknown provider 'gpt'; available: local, none,")
               for p in found), found
    assert "spec.yaml:8:29: environments[1]: unknown environment 'Nope-v0'" in found


def test_real_lookups_know_the_builtin_names_and_gymnasium():
    spec, doc = parse("""
        name: x
        base: {algo: dqn}
        arms:
          - {name: a, provider: scripted, prompt_set: shuffled}
          - {name: b, provider: none}
        environments: [CartPole-v1, Acrobot-v1]
        seeds: 1
        """)
    check_names(spec, doc)  # the installed plugins and gymnasium's registry
    spec, doc = parse("""
        name: x
        base: {algo: dqn}
        arms: [{name: a, prompt_set: nope}]
        environments: [NoSuchEnv-v0]
        seeds: 1
        """)
    with pytest.raises(SpecError) as info:
        check_names(spec, doc)
    assert len(info.value.problems) == 2


HYPER = """
name: hyper
base:
  algo: dqn
  steps: 300
  k: 2
  options: {latency: 0}
  config:
    algorithm: {lr: 0.001, epsilon: {schedule: linear, end: 0.1}}
    network: {hidden_sizes: [64, 64]}
arms:
  - name: base
  - name: mult
    steps: 500
    options: {reply: x}
    config:
      algorithm: {epsilon: {schedule: multiplicative}}
      explorer: {every_k: 3, max_attempts: 1}
  - name: shortcut-over-base-config
    config: {eval: {episodes: 4}}
    eval_episodes: 2
environments: [CartPole-v1, Acrobot-v1]
seeds: [4]
"""


def test_config_is_deep_merged_over_shortcuts_and_the_base():
    spec, _ = parse(HYPER)
    base = run_document(spec, "base", "Acrobot-v1", 4).data
    assert base == {"env": "Acrobot-v1", "seed": 4, "algo": "dqn", "steps": 300,
                    "explorer": {"every_k": 2, "provider_options": {"latency": 0}},
                    "algorithm": {"lr": 0.001, "epsilon": {"schedule": "linear", "end": 0.1}},
                    "network": {"hidden_sizes": [64, 64]}}
    mult = run_document(spec, "mult", 0, 4)
    assert mult.data["steps"] == 500  # the arm's shortcut wins over the base's
    # the arm's leaves win, the base's other leaves stay
    assert mult.data["algorithm"] == {"lr": 0.001, "epsilon": {"schedule": "multiplicative", "end": 0.1}}
    assert mult.data["explorer"] == {"every_k": 3, "provider_options": {"latency": 0, "reply": "x"}, "max_attempts": 1}
    # where each value came from, for error messages
    schedule = ("algorithm", "epsilon", "schedule")
    assert mult.origins[schedule] == ("arms", 1, "config", *schedule)
    assert mult.origins[("algorithm", "lr")] == ("base", "config", "algorithm", "lr")
    assert mult.origins[("explorer", "every_k")] == ("arms", 1, "config", "explorer", "every_k")
    assert mult.origins[("env",)] == ("environments", 0) and mult.origins[("seed",)] == ("seeds",)
    # an arm's shortcut beats the base's config (an arm's value wins), config beats a shortcut of the same arm
    assert run_document(spec, "shortcut-over-base-config", 0, 4).data["eval"] == {"episodes": 4}
    spec, _ = parse(HYPER.replace("    config: {eval: {episodes: 4}}\n", ""))
    assert run_document(spec, "shortcut-over-base-config", 0, 4).data["eval"] == {"episodes": 2}


def test_good_hyperparameter_arms_pass_the_run_configuration_checks():
    spec, doc = parse(HYPER)
    check_names(spec, doc, source="spec.yaml", **NAMES)  # resolved for every arm x env: no problem


BAD_CONFIG = """
name: bad
base: {algo: dqn, steps: 300, provider: scripted}
arms:
  - name: ok
  - name: typo
    config:
      algorithm: {lrr: 1}
  - name: range
    config: {algorithm: {gamma: 1.5}, explorer: {max_attempts: 0}}
environments: [CartPole-v1, Acrobot-v1]
seeds: 1
"""


def test_bad_arm_configurations_name_the_spec_line_and_key_path():
    found = problems(BAD_CONFIG, **NAMES)
    assert len(found) == 3, found  # one line per problem, though each arm runs on two environments
    typo, gamma, attempts = found
    assert typo.startswith("spec.yaml:7:19: arms[1].config.algorithm.lrr: unknown key 'algorithm.lrr'; allowed: lr,")
    assert typo.endswith("(arm 'typo' on CartPole-v1, Acrobot-v1)")
    assert gamma.startswith("spec.yaml:9:26: arms[2].config.algorithm.gamma: algorithm.gamma must be <= 1")
    assert "(got 1.5)" in gamma
    assert attempts.startswith("spec.yaml:9:50: arms[2].config.explorer.max_attempts: "
                               "explorer.max_attempts must be >= 1")


def test_an_algorithm_that_does_not_fit_the_environment():
    found = problems("""
        name: x
        base: {algo: dqn, steps: 300, provider: none}
        arms:
          - name: dqn
          - {name: td3, algo: td3}
          - {name: nope, algo: dqnn}
        environments: [CartPole-v1, Pendulum-v1]
        seeds: 1
        """, **{**NAMES, "env_exists": lambda env: None})
    assert ("spec.yaml:2:8: base.algo: dqn needs discrete actions but Pendulum-v1 has continuous ones; "
            "use one of ddpg, td3, sac (arm 'dqn' on Pendulum-v1)") in found
    assert any(p.startswith("spec.yaml:5:17: arms[1].algo: td3 needs continuous actions but CartPole-v1 has discrete")
               and p.endswith("(arm 'td3' on CartPole-v1)") for p in found), found
    assert any(p.startswith("spec.yaml:6:18: arms[2].algo: algo is invalid: unknown algorithm 'dqnn'; available: dqn,")
               for p in found), found
    assert len(found) == 3, found


def test_presets_and_config_names_are_checked_too(tmp_path):
    found = problems("""
        name: x
        base: {algo: dqn, preset: papr}
        arms:
          - name: a
            config: {explorer: {provider: gpt, prompt_set: nope, task_description: "@missing.txt"}}
        environments: [CartPole-v1]
        seeds: 1
        """, base_dir=tmp_path, **NAMES)
    assert any(p.startswith("spec.yaml:2:19: base.preset: unknown preset 'papr'; available: default, paper")
               for p in found), found
    assert any(p.startswith("spec.yaml:5:25: arms[0].config.explorer.provider: unknown provider 'gpt'") for p in found)
    assert any(p.startswith("spec.yaml:5:40: arms[0].config.explorer.prompt_set: unknown prompt set 'nope'")
               for p in found), found
    assert any(p.startswith("spec.yaml:5:58: arms[0].config.explorer.task_description: task description file")
               for p in found), found


def test_env_and_seed_come_from_the_study():
    found = problems("""
        name: x
        base: {algo: dqn}
        arms:
          - name: b
            config: {env: Acrobot-v1, seed: 3}
        environments: [CartPole-v1]
        seeds: 1
        """)
    assert found == ["spec.yaml:5:14: arms[0].config.env: env cannot be set here: every run's env comes from "
                     "the study's environments",
                     "spec.yaml:5:31: arms[0].config.seed: seed cannot be set here: every run's seed comes from "
                     "the study's seeds"]


def test_an_algorithm_set_only_in_config_counts():
    spec, doc = parse("""
        name: x
        arms:
          - {name: a, config: {algo: dqn, steps: 300}}
        environments: [CartPole-v1]
        seeds: 1
        """)
    check_names(spec, doc, **NAMES)  # validated with a provider, as train adds its default one
    assert run_document(spec, "a", 0, 0).data == {"env": "CartPole-v1", "seed": 0, "algo": "dqn", "steps": 300}


@pytest.mark.parametrize(("text", "expected"), [
    ("name: x\narms: [\n", "not valid YAML"),
    ("- a\n- b\n", "the spec must be a mapping"),
    ("name: x\nbase: {algo: dqn}\narms: []\nenvironments: [CartPole-v1]\nseeds: 1\n",
     "arms: List should have at least 1"),
    ("name: x\nbase: {algo: dqn}\narms: [{name: a}]\nenvironments: [CartPole-v1]\nseeds: 0\n",
     "seed count must be >= 1"),
    ("name: x\narms: [{name: a}]\nenvironments: [CartPole-v1]\nseeds: 1\n", "has no algorithm"),
    ("name: x\nbase: {algo: dqn}\narms: [{name: a/b}]\nenvironments: [CartPole-v1]\nseeds: 1\n", "must start with"),
    ("name: x\nbase: {algo: dqn, replay: true}\narms: [{name: a}]\nenvironments: [CartPole-v1]\nseeds: 1\n",
     "replay without a response_cache"),
    ("name: x\nbase: {algo: dqn}\narms: [{name: a}]\nenvironments: [{id: E, min_score: 1, max_score: 0}]\nseeds: 1\n",
     "must be greater than min_score"),
])
def test_other_bad_specs(text: str, expected: str):
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="s")
    assert expected in str(info.value)
