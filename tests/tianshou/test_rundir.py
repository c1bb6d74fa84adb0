"""The run directory: atomic JSON, update lines with the step they took effect, fallback lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.types import ActionSpec, ExplorationUpdate, Provenance, RequestFailure
from tianshou_integration.rundir import RunDir, write_json_atomic


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def update(version: int, values=(0.5, 0.5)) -> ExplorationUpdate:
    return ExplorationUpdate(version, "distribution", values, provenance=Provenance(latency_s=0.25))


def test_json_is_replaced_atomically(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})

    class Boom:
        def __repr__(self) -> str:
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        write_json_atomic(target, {"a": Boom()})
    assert json.loads(target.read_text()) == {"a": 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # and no temp file is left


def test_update_lines_carry_the_step_they_were_applied_at(tmp_path):
    cache = ExplorationCache(ActionSpec.discrete(2))
    with RunDir(tmp_path, tensorboard=False) as rundir:
        rundir.track(cache)
        first = cache.publish(update(1, (0.2, 0.8)))
        rundir.on_update(first)
        rundir.poll(10)
        assert (tmp_path / "updates.jsonl").read_text() == ""  # not applied yet: held back
        cache.mark_applied(1, 16)
        rundir.poll(16)
        second = cache.publish(update(2))
        rundir.on_update(second)
        third = cache.publish(update(3, (1.0, 0.0)))
        rundir.on_update(third)  # supersedes 2, which was never applied
        cache.mark_applied(3, 40)
        assert rundir.updates_applied == 2
    written = lines(tmp_path / "updates.jsonl")
    assert [(u["version"], u["applied_at_step"]) for u in written] == [(1, 16), (2, None), (3, 40)]
    assert written[0]["values"] == [0.2, 0.8] and written[0]["latency_s"] == 0.25 and written[0]["source"] == "llm"


def test_failures_are_fallback_lines_with_the_values_in_force(tmp_path):
    cache = ExplorationCache(ActionSpec.discrete(3))
    with RunDir(tmp_path, tensorboard=False) as rundir:
        rundir.track(cache)
        rundir.on_failure(RequestFailure("validation:negative", "p[1] = -0.2", 4, 2, 1.5))
    (line,) = lines(tmp_path / "updates.jsonl")
    assert line["source"] == "fallback" and line["reason"] == "validation:negative"
    assert line["version"] == 0 and line["values"] == pytest.approx([1 / 3] * 3)
    assert line["applied_at_step"] is None and line["source_episode"] == 4 and line["attempts"] == 2


def test_metrics_append_and_plots(tmp_path):
    with RunDir(tmp_path, tensorboard=False) as rundir:
        rundir.log_train_episode(20, 20.0)
        rundir.log_eval(40, 35.5)
        rundir.write_plots("t")
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["step,train_return,eval_return", "20,20,",
                                                                   "40,,35.5"]
    # reopening appends, without a second header
    with RunDir(tmp_path, tensorboard=False) as rundir:
        rundir.log_train_episode(60, 9.0)
    assert (tmp_path / "metrics.csv").read_text().splitlines()[-1] == "60,9,"
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert (tmp_path / "exploration.png").stat().st_size > 1000
