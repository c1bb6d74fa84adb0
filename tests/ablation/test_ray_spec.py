"""The spec's ``resources:`` and ``runtime:`` sections (what runs ask a Ray cluster for, how they
run there) and what the runner and ``llm-explorer status`` make of them, without a cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explorer_ablation.progress import Progress, RunWatch, study_state
from explorer_ablation.runner import jobs_for, plan_study
from explorer_ablation.spec import SpecError, parse_spec

BASE = """
name: res
base: {algo: dqn, steps: 1000, provider: none}
arms:
  - name: gpu
    resources: {num_gpus: 0.5, memory_gb: 3}
  - name: cpu
    resources: {num_gpus: 0}
environments: [CartPole-v1]
seeds: 1
resources: {num_cpus: 2.5, num_gpus: 1}
"""


def test_an_arms_resources_override_the_studys_field_by_field(tmp_path: Path):
    spec, _ = parse_spec(BASE)
    jobs = {job.run_id: job for job in jobs_for(plan_study(spec, None), tmp_path, cpus=1)}
    gpu, cpu = jobs["gpu/CartPole-v1/seed-0"], jobs["cpu/CartPole-v1/seed-0"]
    assert (gpu.num_cpus, gpu.num_gpus, gpu.memory_mb, gpu.cpus) == (2.5, 0.5, 3072, 3)  # threads: rounded up
    assert (cpu.num_cpus, cpu.num_gpus, cpu.memory_mb) == (2.5, 0.0, None)
    # without resources: --cpus-per-run, no GPU
    plain, _ = parse_spec(BASE.replace("resources: {num_cpus: 2.5, num_gpus: 1}\n", "")
                          .replace("    resources: {num_gpus: 0.5, memory_gb: 3}\n", ""))
    job = jobs_for(plan_study(plain, None), tmp_path, cpus=4)[0]
    assert (job.num_cpus, job.num_gpus, job.cpus) == (4.0, 0.0, 4)


@pytest.mark.parametrize(("change", "where", "message"), [
    (("num_gpus: 0.5,", "num_gpus: 1.5,"), "arms[0].resources.num_gpus", "more than one GPU must be a whole number"),
    (("memory_gb: 3", "memory_gb: -1"), "arms[0].resources.memory_gb", "greater than 0"),
    (("num_cpus: 2.5", "num_cpu: 2"), "resources.num_cpu", "unknown field 'num_cpu'; resources can set: num_cpus, "
                                                            "num_gpus, memory_gb"),
])
def test_bad_resources_are_reported_at_their_line(change, where, message):
    with pytest.raises(SpecError) as info:
        parse_spec(BASE.replace(*change), source="s.yaml")
    assert f": {where}: " in str(info.value) and message in str(info.value)


def test_runtime_lists_variable_names_and_never_repeats_a_value():
    spec, _ = parse_spec(BASE + "runtime: {env_vars: [OPENAI_API_KEY], max_retries: 5, heartbeat_s: 10}\n")
    assert spec.runtime.env_vars == ["OPENAI_API_KEY"] and spec.runtime.max_retries == 5
    with pytest.raises(SpecError) as info:
        parse_spec(BASE + "runtime: {env_vars: [OK_NAME, OPENAI_API_KEY=sk-secret-value]}\n", source="s.yaml")
    text = str(info.value)
    assert "runtime.env_vars: entries [1] are not environment variable names" in text
    assert "sk-secret-value" not in text
    with pytest.raises(SpecError, match=r"runtime\.retries: unknown field"):
        parse_spec(BASE + "runtime: {retries: 2}\n")


def _write_events(out: Path, events: list[dict]) -> None:
    (out / "status.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def test_status_from_heartbeats_with_an_eta_from_steps_per_second(tmp_path: Path):
    runs = {f"a/CartPole-v1/seed-{s}": {"dir": f"runs/a/CartPole-v1/seed-{s}", "config": {"steps": 1000}}
            for s in range(4)}
    (tmp_path / "study.json").write_text(json.dumps({"runs": runs}))
    _write_events(tmp_path, [
        {"event": "session"},
        {"event": "started", "run": "a/CartPole-v1/seed-0", "attempt": 1, "host": "n1"},
        {"event": "started", "run": "a/CartPole-v1/seed-1", "attempt": 1, "host": "n2"},
        {"event": "heartbeat", "run": "a/CartPole-v1/seed-0", "step": 500, "steps": 1000, "steps_per_s": 10.0},
        {"event": "heartbeat", "run": "a/CartPole-v1/seed-1", "step": 800, "steps": 1000, "steps_per_s": 20.0},
        {"event": "failed", "run": "a/CartPole-v1/seed-2", "error": "boom\nlast line"},
    ])
    state = study_state(tmp_path)
    assert state.active and state.counts() == {"queued": 1, "running": 2, "done": 0, "failed": 1, "interrupted": 0}
    # running: 50 s + 10 s left; one queued run at the mean whole-run time (100 s, 50 s) = 75 s; 2 at once
    assert state.eta_s() == pytest.approx((50 + 10 + 75) / 2)
    # a later session queues again what did not finish; an end without outcome means interrupted
    _write_events(tmp_path, [
        {"event": "started", "run": "a/CartPole-v1/seed-0"}, {"event": "end"},
        {"event": "session"}, {"event": "started", "run": "a/CartPole-v1/seed-3"},
    ])
    state = study_state(tmp_path)
    assert state.runs["a/CartPole-v1/seed-0"].state == "queued" and state.counts()["running"] == 1


def test_progress_eta_uses_heartbeats_before_any_run_finished():
    progress = Progress(total=4, workers=2)
    assert progress.eta_s() is None
    progress.start("r0")
    progress.start("r1")
    progress.beat("r0", {"step": 200, "steps": 1000, "steps_per_s": 100.0})
    progress.beat("r1", {"step": 500, "steps": 1000, "steps_per_s": 50.0})
    # r0: 8 s left, r1: 10 s left; two queued at the mean whole-run time (10 s, 20 s) = 15 s each
    assert progress.eta_s() == pytest.approx((8 + 10 + 2 * 15) / 2)


def test_run_watch_reads_the_newest_step_and_counts_updates_and_failures(tmp_path: Path):
    # the last row is still being written
    (tmp_path / "metrics.csv").write_text("step,train_return,eval_return\n100,9.0,\n250,,12.5\n3")
    updates = [{"source": "llm"}, {"source": "fallback"}, {"source": "llm"}]
    (tmp_path / "updates.jsonl").write_text("".join(json.dumps(u) + "\n" for u in updates) + '{"sour')
    watch = RunWatch(tmp_path, 1000)
    first = watch.beat()
    assert first == {"step": 250, "steps": 1000, "steps_per_s": None, "updates": 2, "llm_failures": 1}
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("00,10.0,\n")
    with open(tmp_path / "updates.jsonl", "a") as f:
        f.write('ce": "fallback"}\n')
    second = watch.beat()
    assert second["step"] == 300 and second["steps_per_s"] > 0 and (second["updates"], second["llm_failures"]) == (2, 2)
