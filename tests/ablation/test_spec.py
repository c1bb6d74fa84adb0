"""The ablation spec: structure, consistency and name checks, each error with its location."""

from __future__ import annotations

import textwrap

import pytest

from explorer_pipeline.ablation.preflight import TrainInterface
from explorer_pipeline.ablation.spec import SpecError, check_names, parse_spec

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


def test_options_the_train_command_lacks_and_unknown_algorithms():
    spec, doc = parse("""
        name: x
        base: {algo: dqn, temperature: 0.5}
        arms:
          - name: a
          - {name: b, algo: dqnn}
        environments: [CartPole-v1]
        seeds: 1
        """)
    interface = TrainInterface(frozenset({"--algo", "--env", "--seed", "--out"}), ("dqn", "c51"))
    with pytest.raises(SpecError) as info:
        check_names(spec, doc, interface=interface, **NAMES)
    found = [p.format("s") for p in info.value.problems]
    assert any(p.startswith("s:2:19: base.temperature: the train command has no --temperature option") for p in found)
    assert "s:5:15: arms[1].algo: unknown algorithm 'dqnn'; available: dqn, c51" in found


def test_help_text_parsing_finds_flags_and_algorithms():
    text = """Usage: llm-explorer train [OPTIONS]
Options:
  --env ENV            Gymnasium id.  [required]
  --algo ALGO          One of: dqn, double-dqn, c51,
                       sac.  [required]
  --steps N            Env steps.
  --mode [async|blocking]
"""
    interface = TrainInterface.from_help(text)
    assert {"--env", "--algo", "--steps", "--mode"} <= interface.flags
    assert interface.algorithms == ("dqn", "double-dqn", "c51", "sac")
    assert TrainInterface.from_help("  --algo [dqn|td3]\n").algorithms == ("dqn", "td3")
    assert TrainInterface.from_help("  --algo NAME  the algorithm\n").algorithms is None


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
