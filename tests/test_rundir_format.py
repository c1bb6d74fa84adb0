"""The run-directory format: atomic writers, tolerant readers, completeness, and both sides using it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.types import ActionSpec, ExplorationUpdate
from explorer_rundir import format as fmt


def test_json_is_written_atomically_readable_by_others_and_with_numpy_values(tmp_path):
    target = tmp_path / "sub" / "x.json"
    fmt.write_json_atomic(target, {"path": Path("/a/b"), "n": np.int64(3), "x": np.float32(0.5),
                                   "v": np.arange(3), "s": {2}, "t": (1, 2)})
    assert json.loads(target.read_text()) == {"path": "/a/b", "n": 3, "x": 0.5, "v": [0, 1, 2], "s": [2], "t": [1, 2]}
    assert stat.S_IMODE(target.stat().st_mode) == fmt.FILE_MODE
    assert target.read_text().endswith("}\n")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "x.json"
    fmt.write_json_atomic(target, {"a": 1})

    class Unwritable:
        def __repr__(self) -> str:
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        fmt.write_json_atomic(target, {"a": Unwritable()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_text_is_written_as_given(tmp_path):
    target = tmp_path / "a.csv"
    fmt.write_text_atomic(target, "h1,h2\r\n1,2\r\n")
    assert target.read_bytes() == b"h1,h2\r\n1,2\r\n"  # csv line endings kept
    fmt.write_text_atomic(target, "replaced")
    assert target.read_text() == "replaced"


def test_read_jsonl_skips_a_half_written_last_line(tmp_path):
    path = tmp_path / fmt.UPDATES_FILE
    path.write_text('{"version": 1}\n[1, 2]\n{"version": 2}\n{"version": 3, "val')
    assert fmt.read_jsonl(path) == [{"version": 1}, {"version": 2}]
    assert fmt.read_jsonl(tmp_path / "missing.jsonl") == []


def test_read_json_is_none_for_missing_or_broken_files(tmp_path):
    (tmp_path / "broken.json").write_text('{"a": ')
    assert fmt.read_json(tmp_path / "broken.json") is None
    assert fmt.read_json(tmp_path / "missing.json") is None
    (tmp_path / fmt.SUMMARY_FILE).write_text("[1]")
    assert fmt.read_summary(tmp_path) is None  # not an object


def test_save_png_writes_a_png_and_closes_the_figure(tmp_path):
    plt = fmt.pyplot()
    assert plt.get_backend().lower() == "agg"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    target = tmp_path / fmt.LEARNING_CURVE_PNG
    fmt.save_png(fig, target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.number not in plt.get_fignums()
    assert [p.name for p in tmp_path.iterdir()] == [fmt.LEARNING_CURVE_PNG]


def test_a_failed_png_save_keeps_the_old_file(tmp_path):
    target = tmp_path / fmt.EXPLORATION_PNG
    target.write_bytes(b"old")
    plt = fmt.pyplot()
    fig = plt.figure()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    fig.savefig = fail
    with pytest.raises(OSError, match="disk full"):
        fmt.save_png(fig, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [fmt.EXPLORATION_PNG]
    assert fig.number not in plt.get_fignums()


@pytest.mark.parametrize(("summary", "steps", "complete"), [
    ({"env_steps": 500, "final_eval_return": 10.0}, 500, True),
    ({"env_steps": 500, "final_eval_return": None}, None, True),
    ({"env_steps": 400, "final_eval_return": 10.0}, 500, False),  # fewer steps than asked for
    ({"env_steps": 500, "final_eval_return": 1.0, "interrupted": True}, None, False),
    ({"env_steps": 500, "final_eval_return": 1.0, "status": "failed"}, None, False),
    ({"env_steps": True, "final_eval_return": 1.0}, None, False),
    ({"final_eval_return": 1.0}, None, False),
])
def test_run_is_complete(tmp_path, summary, steps, complete):
    fmt.write_json_atomic(tmp_path / fmt.SUMMARY_FILE, summary)
    assert fmt.run_is_complete(tmp_path, steps) is complete


def test_missing_summary_is_incomplete(tmp_path):
    assert not fmt.run_is_complete(tmp_path)


def test_what_train_writes_is_what_the_ablation_reads(tmp_path):
    """The two sides share the format: a run directory written by RunDir is read back by the
    ablation's results loader (metrics, updates) and counts as complete."""
    from explorer_ablation.results import load_study
    from tianshou_integration.rundir import RunDir

    run_dir = tmp_path / "runs" / "arm" / "CartPole-v1" / "seed-0"
    cache = ExplorationCache(ActionSpec.discrete(2))
    with RunDir(run_dir, tensorboard=False) as rundir:
        rundir.track(cache)
        rundir.log_train_episode(10, 9.0)
        update = cache.publish(ExplorationUpdate(1, "distribution", (0.9, 0.1)))
        rundir.on_update(update)
        cache.mark_applied(1, 12)
        rundir.poll(12)
        rundir.log_eval(20, 15.0)
        rundir.write_plots(title="t")
        rundir.write_summary({"env_steps": 20, "final_eval_return": 15.0, "interrupted": False})
    assert {fmt.METRICS_FILE, fmt.UPDATES_FILE, fmt.SUMMARY_FILE, fmt.LEARNING_CURVE_PNG,
            fmt.EXPLORATION_PNG} <= {p.name for p in run_dir.iterdir()}
    assert (run_dir / fmt.METRICS_FILE).read_text().splitlines()[0] == ",".join(fmt.METRICS_COLUMNS)
    assert fmt.run_is_complete(run_dir, 20)
    info = {"arm": "arm", "env": "CartPole-v1", "seed": 0, "dir": str(run_dir.relative_to(tmp_path)),
            "settings": {"steps": 20}}
    fmt.write_json_atomic(tmp_path / "study.json", {"runs": {"arm/CartPole-v1/seed-0": info}, "arms": ["arm"],
                                                     "environments": [{"id": "CartPole-v1"}]})
    (result,) = load_study(tmp_path).runs
    assert result.status == "complete"
    assert result.train_curve == [(10.0, 9.0)] and result.eval_curve == [(20.0, 15.0)]
    assert [u["version"] for u in result.applied_updates] == [1]
    assert result.final_return == 15.0
