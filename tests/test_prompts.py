"""Prompt sets and task descriptions as validated data: strict variables, ``extends``, hashes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda

from explorer_pipeline.errors import PromptError
from explorer_pipeline.prompts import EPISODE_VARIABLES, MessageTemplate, PromptSet, load_prompt_set
from explorer_pipeline.resources import prompts_dir
from explorer_pipeline.session import ExplorerConfig
from explorer_pipeline.tasks import TaskDescription, custom_task, load_task_file
from explorer_pipeline.types import ActionSpec, EpisodeRecord, ExplorationUpdate

from .pipelines import make_context, make_models, pipeline_for

SETS = sorted((prompts_dir() / "sets").glob("*.yaml"))
TASK_FILES = sorted((prompts_dir() / "tasks").glob("*.yaml"))

#: a minimal valid single-stage set, as YAML text; tests edit it
SINGLE = """\
id: {id}
description: a test set
distribution:
  system: You choose probabilities.
  user: |
    Return $episode_return, actions $sampled_actions.
    $output_format
"""

TWO_STAGE = """\
id: {id}
description: a two-stage test set
analysis:
  system: You analyse.
  user: Return $episode_return, actions $sampled_actions.
distribution:
  system: You choose probabilities.
  user: |
    $analysis
    $output_format
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def all_variables(**overrides) -> dict[str, str]:
    variables = {name: f"<{name}>" for name in EPISODE_VARIABLES | {"analysis", "output_format"}}
    variables.update(overrides)
    return variables


# --------------------------------------------------------------------------- built-in sets


def test_the_built_in_sets_exist():
    assert {p.stem for p in SETS} >= {"paper", "name-only", "single-stage", "shuffled", "random", "frozen"}


@pytest.mark.parametrize("path", SETS, ids=[p.stem for p in SETS])
def test_every_built_in_prompt_set_loads_and_renders(path):
    ps = load_prompt_set(path)
    assert ps.id == path.stem
    assert ps.description.strip()
    assert len(ps.template_hash()) == 16
    for kind in ("distribution", "bias"):
        template = ps.distribution if kind == "distribution" else ps.bias
        if template is None:
            continue
        rendered = template.render(all_variables())
        assert [role for role, _ in rendered] == ["system", "human"]
        # no placeholder is left over: each "$" in a rendered message comes from a "$$" escape of
        # that same message (the variables themselves render as <name>, without a "$")
        for source, (_, text) in zip((template.system, template.user), rendered, strict=True):
            assert text.count("$") == source.count("$$"), text
        assert "<output_format>" in rendered[1][1]
    if ps.analysis is not None:
        assert "<sampled_actions>" in ps.analysis.render(all_variables())[1][1]


def test_built_in_sets_have_both_kinds_when_they_call_the_llm():
    for path in SETS:
        ps = load_prompt_set(path)
        if ps.calls_llm:
            assert ps.distribution is not None and ps.bias is not None, ps.id


def test_paper_set_is_two_stage_and_single_stage_is_not():
    assert load_prompt_set(prompts_dir() / "sets" / "paper.yaml").two_stage
    assert not load_prompt_set(prompts_dir() / "sets" / "single-stage.yaml").two_stage


@pytest.mark.parametrize("path", [p for p in SETS if load_prompt_set(p).two_stage], ids=lambda p: p.stem)
def test_two_stage_sets_share_their_prompt_prefix_across_stages(path):
    """Stage 1 and stage 2 render the same messages up to the end of the task description, so a
    server's prompt cache evaluates that prefix once per update (docs/benchmarks.md)."""
    ps = load_prompt_set(path)
    variables = all_variables(task_description="A long task description.")
    stage1 = ps.analysis.render(variables)
    for kind in ("distribution", "bias"):
        stage2 = ps.proposal_for(kind).render(variables)
        assert stage2[0] == stage1[0], (ps.id, kind)  # the same system message
        assert stage1[1][1].startswith("A long task description.\n"), ps.id
        assert stage2[1][1].startswith("A long task description.\n"), (ps.id, kind)


def test_control_sets():
    controls = {p.stem: load_prompt_set(p).control for p in SETS}
    assert controls["shuffled"] == "shuffled" and controls["frozen"] == "frozen" and controls["random"] == "random"
    assert controls["paper"] is None
    assert not load_prompt_set(prompts_dir() / "sets" / "random.yaml").calls_llm


# --------------------------------------------------------------------------- strict variables


def test_a_valid_custom_set_loads(tmp_path):
    ps = load_prompt_set(write(tmp_path, "mine", SINGLE.format(id="mine")))
    assert ps.id == "mine" and not ps.two_stage


def test_unknown_variable_fails_at_load_naming_it(tmp_path):
    text = SINGLE.format(id="bad").replace("$sampled_actions.", "$sampled_actions $episode_reward.")
    path = write(tmp_path, "bad", text)
    with pytest.raises(PromptError) as info:
        load_prompt_set(path)
    assert "episode_reward" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_variable_in_the_analysis_stage(tmp_path):
    text = TWO_STAGE.format(id="bad").replace("You analyse.", "You analyse $analysis_style.")
    with pytest.raises(PromptError, match="analysis_style"):
        load_prompt_set(write(tmp_path, "bad", text))


def test_analysis_variable_in_a_single_stage_set_is_unknown(tmp_path):
    text = SINGLE.format(id="bad").replace("$output_format", "$analysis $output_format")
    with pytest.raises(PromptError, match="'analysis'"):
        load_prompt_set(write(tmp_path, "bad", text))


@pytest.mark.parametrize(
    ("template", "old", "new", "missing"),
    [
        (SINGLE, "$output_format", "", "output_format"),
        (SINGLE, "Return $episode_return, ", "", "episode_return"),
        (SINGLE, "actions $sampled_actions.", "", "sampled_actions"),
        (TWO_STAGE, "$analysis\n", "", "analysis"),
        (TWO_STAGE, "actions $sampled_actions.", "", "sampled_actions"),
    ],
)
def test_missing_required_variable_fails_at_load_naming_it(tmp_path, template, old, new, missing):
    text = template.format(id="bad")
    assert old in text
    with pytest.raises(PromptError) as info:
        load_prompt_set(write(tmp_path, "bad", text.replace(old, new)))
    assert f"'{missing}'" in str(info.value)


def test_a_set_needs_a_proposal_template(tmp_path):
    with pytest.raises(PromptError, match="distribution"):
        load_prompt_set(write(tmp_path, "bad", "id: bad\ndescription: nothing to ask\n"))


def test_unknown_keys_are_rejected(tmp_path):
    text = SINGLE.format(id="bad") + "temprature: 0.5\n"
    with pytest.raises(PromptError, match="temprature"):
        load_prompt_set(write(tmp_path, "bad", text))


@pytest.mark.parametrize("content", ["- just\n- a list\n", "id: [unclosed\n", ""])
def test_malformed_yaml_is_a_prompt_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    with pytest.raises(PromptError) as info:
        load_prompt_set(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_prompt_error(tmp_path):
    with pytest.raises(PromptError, match="cannot read"):
        load_prompt_set(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- $ escapes


def test_dollar_escapes_and_literal_json_braces(tmp_path):
    text = SINGLE.format(id="money").replace(
        "  system: You choose probabilities.",
        '  system: |-\n    It costs $$5. Answer like {"probabilities": [..]}. ${episode_return}x',
    )
    ps = load_prompt_set(write(tmp_path, "money", text))
    system = ps.distribution.render(all_variables(episode_return="12.5"))[0][1]
    assert system == 'It costs $5. Answer like {"probabilities": [..]}. 12.5x'


def test_a_bare_dollar_is_rejected_at_load(tmp_path):
    text = SINGLE.format(id="bad").replace("You choose probabilities.", "It costs $5.")
    with pytest.raises(PromptError, match=r"\$\$"):
        load_prompt_set(write(tmp_path, "bad", text))


def test_a_bare_dollar_error_names_the_file(tmp_path):
    text = SINGLE.format(id="bad").replace("You choose probabilities.", "It costs $5.")
    path = write(tmp_path, "bad", text)
    with pytest.raises(PromptError) as info:
        load_prompt_set(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- extends


def test_extends_inherits_and_overrides(tmp_path):
    write(tmp_path, "base", TWO_STAGE.format(id="base"))
    child = load_prompt_set(write(tmp_path, "child", "extends: base\nid: child\ntask_view: name\ncontrol: frozen\n"))
    base = load_prompt_set(tmp_path / "base.yaml")
    assert (child.id, child.task_view, child.control) == ("child", "name", "frozen")
    assert child.analysis == base.analysis and child.distribution == base.distribution
    assert child.description == base.description


def test_extends_chains(tmp_path):
    write(tmp_path, "a", TWO_STAGE.format(id="a"))
    write(tmp_path, "b", "extends: a\nid: b\ndescription: from b\n")
    c = load_prompt_set(write(tmp_path, "c", "extends: b\nid: c\n"))
    assert c.id == "c" and c.description == "from b" and c.two_stage


def test_the_built_in_controls_extend_the_paper_set():
    paper = load_prompt_set(prompts_dir() / "sets" / "paper.yaml")
    for name in ("shuffled", "frozen", "name-only"):
        ps = load_prompt_set(prompts_dir() / "sets" / f"{name}.yaml")
        assert ps.analysis == paper.analysis and ps.distribution == paper.distribution and ps.bias == paper.bias


def test_an_extending_set_is_validated_after_merging(tmp_path):
    write(tmp_path, "base", TWO_STAGE.format(id="base"))
    text = "extends: base\nid: child\nanalysis:\n  system: s\n  user: only $episode_return and $nonsense\n"
    with pytest.raises(PromptError, match="nonsense"):
        load_prompt_set(write(tmp_path, "child", text))


@pytest.mark.parametrize(
    "files",
    [
        {"a": "extends: a\n"},
        {"a": "extends: b\n", "b": "extends: a\nid: b\n"},
        {"a": "extends: b\n", "b": "extends: c\n", "c": "extends: b\n"},
    ],
    ids=["self", "two", "three"],
)
def test_extends_cycles_are_rejected(tmp_path, files):
    for name, text in files.items():
        write(tmp_path, name, SINGLE.format(id=name) + text)
    with pytest.raises(PromptError, match="cycle"):
        load_prompt_set(tmp_path / "a.yaml")


def test_extends_a_missing_set(tmp_path):
    with pytest.raises(PromptError, match="nowhere"):
        load_prompt_set(write(tmp_path, "a", "extends: nowhere\nid: a\n"))


# --------------------------------------------------------------------------- render


def test_render_with_a_missing_variable_names_it():
    template = MessageTemplate(system="s $task_title", user="$episode_return")
    with pytest.raises(PromptError, match="'task_title'"):
        template.render({"episode_return": "1"})


def test_render_fills_everything():
    template = MessageTemplate(system="s $task_title", user="$episode_return!")
    assert template.render({"task_title": "CartPole", "episode_return": "1"}) == [
        ("system", "s CartPole"), ("human", "1!")]


def test_proposal_for_a_missing_kind_is_a_prompt_error(tmp_path):
    ps = load_prompt_set(write(tmp_path, "mine", SINGLE.format(id="mine")))
    assert ps.proposal_for("distribution") is ps.distribution
    with pytest.raises(PromptError, match="'bias'"):
        ps.proposal_for("bias")


# --------------------------------------------------------------------------- template hash


def test_template_hash_is_stable_and_tracks_template_changes(tmp_path):
    one = load_prompt_set(write(tmp_path, "one", SINGLE.format(id="x")))
    same = load_prompt_set(write(tmp_path, "same", SINGLE.format(id="x")))
    assert one.template_hash() == same.template_hash()
    edited = load_prompt_set(write(tmp_path, "edited", SINGLE.format(id="x").replace("You choose", "You pick")))
    assert edited.template_hash() != one.template_hash()
    user_edit = load_prompt_set(write(tmp_path, "user", SINGLE.format(id="x").replace("Return", "Reward")))
    assert len({one.template_hash(), edited.template_hash(), user_edit.template_hash()}) == 3


def test_built_in_hashes_differ():
    hashes = {load_prompt_set(p).template_hash() for p in SETS}
    assert len(hashes) == len(SETS)


def test_hash_covers_control_options(tmp_path):
    base = yaml.safe_load((prompts_dir() / "sets" / "random.yaml").read_text())
    a = PromptSet.model_validate(base)
    b = PromptSet.model_validate({**base, "options": {**base["options"], "target_entropy": 0.5}})
    assert a.template_hash() != b.template_hash()


# --------------------------------------------------------------------------- name-only view


class Recorder:
    """A chat 'model' (a runnable) that records the messages it gets and answers from a script."""

    def __init__(self, reply: str) -> None:
        self.calls: list[list] = []
        self.runnable = RunnableLambda(self._answer)
        self.reply = reply

    def _answer(self, messages):
        self.calls.append(list(messages))
        return AIMessage(self.reply)


@pytest.mark.parametrize(("set_name", "shows_description"), [("name-only", False), ("paper", True)])
async def test_name_only_view_shows_only_the_title(set_name, shows_description):
    task = TaskDescription(env_id="CartPole-v1", title="CartPole",
                           description="UNIQUE-DESCRIPTION-TEXT about poles.", action_labels=("left", "right"))
    spec = ActionSpec.discrete(2, task.action_labels)
    analysis, proposal = Recorder("It pushes left too often."), Recorder('{"probabilities": [0.5, 0.5]}')
    models = make_models({"analysis": analysis.runnable, "proposal": proposal.runnable})
    config = ExplorerConfig(prompt_set=set_name, sample_m=4, max_attempts=1)
    pipeline = pipeline_for(make_context(spec, set_name, models=models, config=config, task=task))
    record = EpisodeRecord(9.0, 4, "CartPole-v1", 0, (0, 1, 0, 0))
    assert isinstance(await pipeline.handle(record, [record], version=1), ExplorationUpdate)
    prompts = "\n".join(str(m.content) for call in analysis.calls + proposal.calls for m in call)
    assert ("UNIQUE-DESCRIPTION-TEXT" in prompts) is shows_description
    if not shows_description:
        assert "The task is CartPole." in prompts


# --------------------------------------------------------------------------- task descriptions


def test_task_files_exist():
    assert {p.stem for p in TASK_FILES} >= {"classic_control", "box2d", "mujoco", "atari"}


@pytest.mark.parametrize("path", TASK_FILES, ids=[p.stem for p in TASK_FILES])
def test_every_built_in_task_file_loads_with_labels(path):
    tasks = load_task_file(path)
    assert tasks
    for task in tasks:
        assert task.env_id and task.title.strip() and task.description.strip(), task.env_id
        assert task.action_labels, f"{task.env_id} has no action labels"
        assert all(isinstance(label, str) and label.strip() for label in task.action_labels), task.env_id
        assert len(set(task.action_labels)) == len(task.action_labels), f"{task.env_id}: duplicate labels"


def test_task_ids_are_unique_across_files():
    ids = [task.env_id for path in TASK_FILES for task in load_task_file(path)]
    assert len(ids) == len(set(ids))


def test_well_known_tasks_have_the_right_number_of_labels():
    tasks = {t.env_id: t for path in TASK_FILES for t in load_task_file(path)}
    assert len(tasks["CartPole-v1"].action_labels) == 2
    assert len(tasks["Acrobot-v1"].action_labels) == 3


def test_malformed_task_file_names_the_problem(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text("family: x\ntasks:\n  Foo-v0:\n    title: Foo\n    description: d\n")
    with pytest.raises(PromptError, match="action_labels"):
        load_task_file(path)


def test_custom_task_from_text_and_file(tmp_path):
    task = custom_task("ALE/MyGame-v5", "  Shoot things.  ", ("a", "b"))
    assert (task.title, task.description, task.action_labels) == ("MyGame", "Shoot things.", ("a", "b"))
    path = tmp_path / "desc.txt"
    path.write_text("From a file.\n")
    assert custom_task("mymod:Thing-v0", f"@{path}").description == "From a file."


@pytest.mark.parametrize("text", ["", "   "])
def test_custom_task_must_not_be_empty(text):
    with pytest.raises(PromptError, match="empty"):
        custom_task("Foo-v0", text)


def test_custom_task_missing_file(tmp_path):
    with pytest.raises(PromptError, match="cannot read"):
        custom_task("Foo-v0", f"@{tmp_path / 'missing.txt'}")


# --------------------------------------------------------------------------- strict YAML


def test_a_duplicate_key_in_a_prompt_set_names_the_file_and_line(tmp_path):
    text = SINGLE.format(id="twice") + "description: said twice\n"
    path = write(tmp_path, "twice", text)
    with pytest.raises(PromptError) as info:
        load_prompt_set(path)
    message = str(info.value)
    assert f"{path}:8:1" in message  # the second 'description'
    assert "duplicate key 'description' (first given at line 2)" in message


def test_a_duplicate_key_inside_a_template_is_caught_too(tmp_path):
    text = SINGLE.format(id="twice").replace("  system: You choose probabilities.\n",
                                             "  system: You choose probabilities.\n  system: No, you do not.\n")
    with pytest.raises(PromptError, match=r"twice\.yaml:5:3: duplicate key 'system'"):
        load_prompt_set(write(tmp_path, "twice", text))


def test_a_duplicate_key_in_the_parent_of_an_extending_set_names_the_parent(tmp_path):
    write(tmp_path, "base", SINGLE.format(id="base") + "id: again\n")
    child = write(tmp_path, "child", "extends: base\nid: child\n")
    with pytest.raises(PromptError) as info:
        load_prompt_set(child)
    assert f"{tmp_path / 'base.yaml'}:8:1: duplicate key 'id'" in str(info.value)


def test_a_task_described_twice_names_the_file_and_line(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text(textwrap.dedent("""\
        family: x
        tasks:
          Foo-v0:
            title: Foo
            description: first
            action_labels: [left, right]
          Foo-v0:
            title: Foo again
            description: second
            action_labels: [left, right]
        """))
    with pytest.raises(PromptError) as info:
        load_task_file(path)
    assert f"{path}:7:3: duplicate key 'Foo-v0' (first given at line 3)" in str(info.value)


def test_a_task_file_validation_problem_names_the_line(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text("family: x\ntasks:\n  Foo-v0:\n    title: Foo\n    description: d\n    labels: [a]\n")
    with pytest.raises(PromptError) as info:
        load_task_file(path)
    message = str(info.value)
    assert f"{path}:6:5: tasks.Foo-v0.labels: Extra inputs are not permitted" in message
    assert f"{path}:3:3: tasks.Foo-v0.action_labels: Field required" in message  # a missing key: at its parent
