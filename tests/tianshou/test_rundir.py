"""The run directory: atomic JSON, update lines with the step they took effect, fallback lines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.types import ActionSpec, ExplorationUpdate, Provenance, RequestFailure
from tianshou_integration import rundir_figures
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


# --------------------------------------------------------------------------- informativeness
def published(cache: ExplorationCache, rundir: RunDir, version: int, values, source_episode: int,
              kind: str = "distribution") -> ExplorationUpdate:
    """Publish a real update, as the runtime does, and hand it to the run directory."""
    u = ExplorationUpdate(version, kind, values, provenance=Provenance(source_episode=source_episode, latency_s=0.1))
    cache.publish(u)
    rundir.on_update(u)
    return u


def test_uniform_updates_are_applied_but_not_informative(tmp_path):
    """The `make demo` case: three uniform answers applied, none of them guidance."""
    cache = ExplorationCache(ActionSpec.discrete(2))
    with RunDir(tmp_path, tensorboard=False) as rundir:
        rundir.track(cache)
        for version in (1, 2, 3):
            rundir.log_train_episode(100 * version, 20.0)
            published(cache, rundir, version, (0.5, 0.5), source_episode=version - 1)
            cache.mark_applied(version, 100 * version + 5)
            rundir.poll(100 * version + 5)
        summary = rundir.guidance_summary()
        assert rundir.updates_applied == 3 and rundir.updates_informative == 0
    assert summary["updates_informative"] == 0 and summary["informative_share"] == 0.0
    assert summary["informative_threshold"] == {"metric": "kl_uniform_nats", "min": 0.01, "unit": "nats"}
    assert summary["median_kl_uniform_nats"] == 0.0 and summary["median_entropy_norm"] == 1.0
    assert (summary["median_staleness_episodes"], summary["median_staleness_steps"]) == (0, 5)
    for written in lines(tmp_path / "updates.jsonl"):
        assert written["informative"] is False and written["kl_uniform_nats"] == 0.0
        assert written["entropy_norm"] == 1.0 and written["change_tv"] == 0.0


def test_update_lines_and_summary_carry_informativeness_and_staleness(tmp_path):
    cache = ExplorationCache(ActionSpec.discrete(2))
    with RunDir(tmp_path, tensorboard=False) as rundir:
        rundir.track(cache)
        rundir.log_train_episode(100, 10.0)  # episode 0 ends at step 100
        rundir.log_train_episode(250, 12.0)  # episode 1
        published(cache, rundir, 1, (0.25, 0.75), source_episode=0)
        rundir.log_train_episode(300, 15.0)  # episode 2: finished while version 1 waited
        cache.mark_applied(1, 320)
        rundir.poll(320)
        published(cache, rundir, 2, (0.5, 0.5), source_episode=2)
        cache.mark_applied(2, 300 + 8)  # (as blocking mode would: right after its source episode)
        rundir.poll(308)
        published(cache, rundir, 3, (0.9, 0.1), source_episode=2)
        published(cache, rundir, 4, (0.2, 0.8), source_episode=2)  # supersedes 3, never applied
        rundir.log_train_episode(400, 20.0)  # episode 3
        cache.mark_applied(4, 410)  # used, but not yet polled: still held back
        summary = rundir.guidance_summary()
        assert rundir.updates_applied == 3 and rundir.updates_informative == 2
    written = {u["version"]: u for u in lines(tmp_path / "updates.jsonl")}
    one = written[1]
    assert one["entropy_norm"] == pytest.approx(0.811278, abs=1e-6)  # H(0.25, 0.75) / ln 2
    assert one["kl_uniform_nats"] == pytest.approx(0.130812, abs=1e-6)  # ln 2 - H(0.25, 0.75)
    assert one["change_tv"] == 0.25 and one["informative"] is True  # against the uniform default
    assert (one["staleness_episodes"], one["staleness_steps"]) == (2, 220)  # episodes 1, 2; 320 - 100
    two = written[2]
    assert two["informative"] is False and two["change_tv"] == 0.25
    assert (two["staleness_episodes"], two["staleness_steps"]) == (0, 8)
    three = written[3]
    assert three["applied_at_step"] is None and three["informative"] is True  # measured, but never used
    assert three["staleness_episodes"] is None and three["staleness_steps"] is None
    four = written[4]
    assert four["change_tv"] == pytest.approx(0.7)  # from 0.9 / 0.1, the update it replaced
    assert (four["staleness_episodes"], four["staleness_steps"]) == (1, 110)
    # the summary counts applied updates only: 1 and 4 informative, 2 not; 3 never applied
    assert summary["updates_informative"] == 2
    assert summary["informative_share"] == pytest.approx(2 / 3, abs=1e-6)
    assert summary["median_kl_uniform_nats"] == pytest.approx(0.130812, abs=1e-6)  # KL(0.2/0.8) = 0.192745
    assert summary["median_change_tv"] == 0.25 and summary["median_staleness_steps"] == 110
    assert summary["median_staleness_episodes"] == 1 and summary["guidance_kind"] == "distribution"


def test_continuous_bias_is_measured_in_normalised_units(tmp_path):
    cache = ExplorationCache(ActionSpec.continuous([-2.0, -1.0], [2.0, 1.0]))
    with RunDir(tmp_path, tensorboard=False) as rundir:
        rundir.track(cache)
        rundir.log_train_episode(200, -900.0)
        published(cache, rundir, 1, (0.02, -0.03), source_episode=0, kind="bias")
        published(cache, rundir, 2, (0.02, -0.12), source_episode=0, kind="bias")
        cache.mark_applied(2, 260)
        summary = rundir.guidance_summary()
    first, second = lines(tmp_path / "updates.jsonl")
    assert first["bias_max_abs"] == 0.03 and first["informative"] is False and first["applied_at_step"] is None
    assert second["bias_max_abs"] == 0.12 and second["informative"] is True
    assert second["bias_rms"] == pytest.approx(((0.02**2 + 0.12**2) / 2) ** 0.5, abs=1e-6)
    assert second["change_max_abs"] == pytest.approx(0.09)
    assert "kl_uniform_nats" not in second and second["staleness_steps"] == 60
    assert summary["updates_informative"] == 1 and summary["informative_share"] == 1.0
    assert summary["informative_threshold"] == {"metric": "bias_max_abs", "min": 0.05,
                                                "unit": "normalised action units"}
    assert summary["median_bias_max_abs"] == 0.12 and "median_kl_uniform_nats" not in summary


def test_tensorboard_gets_informativeness_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cache = ExplorationCache(ActionSpec.discrete(3))
    with RunDir(tmp_path, tensorboard=True) as rundir:
        rundir.track(cache)
        rundir.log_train_episode(50, 9.0)
        published(cache, rundir, 1, (0.6, 0.2, 0.2), source_episode=0)
        cache.mark_applied(1, 64)
        rundir.poll(64)
        published(cache, rundir, 2, (1 / 3, 1 / 3, 1 / 3), source_episode=0)
        cache.mark_applied(2, 80)
        published(cache, rundir, 3, (0.2, 0.2, 0.6), source_episode=0)  # 2 was applied, then superseded
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()

    def scalars(tag: str) -> tuple[list[int], list[float]]:
        return [e.step for e in events.Scalars(tag)], [e.value for e in events.Scalars(tag)]

    assert scalars("explorer/informative") == ([64, 80], [1.0, 0.0])
    assert scalars("explorer/updates_informative") == ([64, 80], [1.0, 1.0])
    assert scalars("explorer/updates_applied") == ([64, 80], [1.0, 2.0])
    kl = 0.6 * math.log(1.8) + 0.4 * math.log(0.6)  # KL((0.6, 0.2, 0.2) || uniform) = 0.148...
    steps, values = scalars("explorer/kl_uniform_nats")
    assert steps == [64, 80] and values == pytest.approx([kl, 0.0], abs=1e-5)
    assert scalars("explorer/staleness_steps") == ([64, 80], [14.0, 30.0])
    assert {"explorer/entropy_norm", "explorer/change_tv", "explorer/staleness_episodes"} <= set(
        events.Tags()["scalars"])


def test_exploration_plot_shows_informativeness_against_the_threshold(tmp_path, monkeypatch):
    figures = {}

    def keep(fig, path, dpi):
        figures[path.name] = fig

    monkeypatch.setattr(rundir_figures, "save_png", keep)
    cache = ExplorationCache(ActionSpec.discrete(2))
    with RunDir(tmp_path, tensorboard=False) as rundir:
        rundir.track(cache)
        rundir.log_train_episode(10, 1.0)
        for version, values in ((1, (0.5, 0.5)), (2, (0.1, 0.9))):
            published(cache, rundir, version, values, source_episode=0)
            cache.mark_applied(version, 10 * version + 10)
            rundir.poll(10 * version + 10)
        rundir.write_plots("t")
    values_ax, info_ax, stale_ax, stale_steps_ax = figures["exploration.png"].axes
    assert "2 applied, 1 informative, 0 fallbacks" in values_ax.get_title()
    threshold = [line for line in info_ax.get_lines() if line.get_label() == "threshold 0.01"]
    assert len(threshold) == 1 and list(threshold[0].get_ydata()) == [0.01, 0.01]
    (kl_line,) = [line for line in info_ax.get_lines() if line.get_label() == "kl_uniform_nats"]
    assert list(kl_line.get_xdata()) == [20, 30]
    assert list(kl_line.get_ydata()) == pytest.approx([0.0, math.log(2) + 0.1 * math.log(0.1) + 0.9 * math.log(0.9)],
                                                       abs=1e-6)
    assert list(stale_steps_ax.get_lines()[0].get_ydata()) == [10, 20]
    assert stale_ax.get_ylabel() == "staleness (episodes)"
