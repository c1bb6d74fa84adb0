"""Studies on fsspec storage (:mod:`explorer_ablation.storage`), without Ray: a run directory is
uploaded in an order that keeps the storage resumable, downloaded before a resume, moved aside
when it cannot resume; bad storage is bad input. The storage here is fsspec's ``file://`` on a
directory of its own, and the worker's copy lives elsewhere (``LLM_EXPLORER_SCRATCH``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explorer_ablation.launch import Job
from explorer_ablation.storage import Remote, RemoteRun, RunSync, StudyStorage, local_copy, open_study, read_marker

RUN = "runs/a/CartPole-v1/seed-0"
SUMMARY = {"env_steps": 100, "episodes": 3, "final_eval_return": 9.0, "wall_s": 1.0}


@pytest.fixture
def places(tmp_path, monkeypatch):
    """``(storage dir, its file:// URI, the worker's scratch dir)``, all apart."""
    storage, scratch = tmp_path / "bucket", tmp_path / "scratch"
    storage.mkdir()
    monkeypatch.setenv("LLM_EXPLORER_SCRATCH", str(scratch))
    monkeypatch.setenv("LLM_EXPLORER_STUDY_CACHE", str(tmp_path / "cache"))
    return storage, f"file://{storage}", scratch


def _sync(uri: str, steps: int = 100) -> RunSync:
    job = Job(run_id="a/CartPole-v1/seed-0",
              arguments=("--config", "/driver/configs/a.yaml", "--out", "/driver/" + RUN),
              run_dir=Path("/driver") / RUN, log_path=Path("/driver/logs/a.log"), steps=steps)
    return RunSync(RemoteRun(uri, RUN, "logs/a.log", "configs/a.yaml"), job, node="node-1")


def _checkpoint(run_dir: Path, step: int) -> None:
    folder = run_dir / "checkpoints" / f"step-{step}"
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(b"x" * step)
    (folder / "meta.json").write_text(json.dumps({"step": step}))


def _recording(sync: RunSync) -> list[str]:
    sent: list[str] = []
    put = sync.remote.put

    def record(local: Path, rel: str) -> None:
        put(local, rel)
        sent.append(rel.removeprefix(RUN + "/"))

    sync.remote.put = record  # type: ignore[method-assign]
    return sent


def test_a_run_is_uploaded_files_first_then_checkpoints_meta_last_and_summary_at_the_very_end(places):
    storage, uri, scratch = places
    sync = _sync(uri)
    job = sync.job
    assert job.run_dir.is_relative_to(scratch) and not job.run_dir.is_relative_to(storage)
    assert job.arguments == ("--config", str(sync.config), "--out", str(job.run_dir))
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "config.yaml").write_text("algo: dqn\n")
    (job.run_dir / "metrics.csv").write_text("step,train_return,eval_return\n10,1.0,\n")
    sent = _recording(sync)
    assert sync.sync() is False and sent == []  # no checkpoint yet: nothing to upload
    _checkpoint(job.run_dir, 50)
    assert sync.sync() is True
    assert sent == ["config.yaml", "metrics.csv", "checkpoints/step-50/state.pt", "checkpoints/step-50/meta.json"]
    assert sync.remote.resumable(RUN) and sync.remote.checkpoints(RUN) == ["step-50"]
    # the next checkpoint: only what changed goes, and a checkpoint train pruned is dropped there too
    sent.clear()
    with open(job.run_dir / "metrics.csv", "a") as f:
        f.write("60,2.0,\n")
    _checkpoint(job.run_dir, 80)
    for file in (job.run_dir / "checkpoints" / "step-50").iterdir():
        file.unlink()
    (job.run_dir / "checkpoints" / "step-50").rmdir()
    assert sync.sync() is True
    assert sent == ["metrics.csv", "checkpoints/step-80/state.pt", "checkpoints/step-80/meta.json"]
    assert sync.remote.checkpoints(RUN) == ["step-80"] and not (storage / RUN / "checkpoints" / "step-50").exists()
    assert (storage / RUN / "metrics.csv").read_text().endswith("60,2.0,\n")
    # the end: the log, then summary.json last; the node's copy is removed
    sent.clear()
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    job.log_path.write_text("trained\n")
    (job.run_dir / "summary.json").write_text(json.dumps(SUMMARY))
    (job.run_dir / ".lock").write_text("")
    assert not sync.remote.run_is_complete(RUN, 100)
    sync.finish(clear=True)
    assert sent == ["logs/a.log", "summary.json"]
    assert sync.remote.run_is_complete(RUN, 100) and not sync.remote.run_is_complete(RUN, 200)
    assert not job.run_dir.exists() and not (storage / RUN / ".lock").exists()
    assert (storage / "logs" / "a.log").read_text() == "trained\n"
    assert not list(storage.rglob("*.part-*"))


def test_a_retry_on_another_node_starts_from_the_storage_not_from_what_a_node_kept(places):
    storage, uri, _ = places
    (storage / "configs").mkdir()
    (storage / "configs" / "a.yaml").write_text("algo: dqn\n")
    (storage / "logs").mkdir()
    (storage / "logs" / "a.log").write_text("attempt 1\n")
    (storage / RUN).mkdir(parents=True)
    (storage / RUN / "config.yaml").write_text("algo: dqn\n")
    (storage / RUN / "metrics.csv").write_text("step,train_return,eval_return\n10,1.0,\n")
    _checkpoint(storage / RUN, 50)
    (storage / RUN / "checkpoints" / ".partial-x").mkdir()  # a checkpoint that was being written
    sync = _sync(uri)
    stale = sync.job.run_dir
    _checkpoint(stale, 90)  # this node's copy from an older attempt: not what the storage holds
    job = sync.prepare()
    assert sync.resumed_from == ["step-50"] and sync.moved_aside is None
    assert sorted(p.name for p in (job.run_dir / "checkpoints").iterdir()) == ["step-50"]
    assert (job.run_dir / "metrics.csv").read_text() == (storage / RUN / "metrics.csv").read_text()
    assert sync.config.read_text() == "algo: dqn\n" and job.log_path.read_text() == "attempt 1\n"
    sent = _recording(sync)
    assert sync.sync() is False and sent == []  # what was downloaded is not sent back
    # a half-written run without a checkpoint is moved aside on the storage and started afresh
    (storage / RUN / "checkpoints" / "step-50" / "meta.json").unlink()
    again = _sync(uri)
    job = again.prepare()
    assert again.moved_aside == f"{uri}/{RUN}.failed-1" and not job.run_dir.exists()
    assert not (storage / RUN).exists() and (storage / f"{RUN}.failed-1" / "metrics.csv").is_file()


def test_the_driver_keeps_its_files_apart_and_reads_completeness_and_reports_from_the_storage(places, tmp_path):
    storage, uri, _ = places
    store = open_study(uri + "/")
    assert store.where == uri and store.local.is_relative_to(tmp_path / "cache")
    assert not store.has_runs() and not store.run_is_complete(RUN, 100)
    (storage / RUN).mkdir(parents=True)
    (storage / RUN / "summary.json").write_text(json.dumps(SUMMARY))
    assert store.has_runs() and store.run_is_complete(RUN, 100) and not store.run_is_complete(RUN, 101)
    assert not (store.local / RUN).exists()
    # its files go up; status.jsonl at once for events, at most every few seconds for heartbeats
    (store.local / "study.json").write_text(json.dumps({"runs": {"a/CartPole-v1/seed-0": {"dir": RUN}}}))
    (store.local / "configs").mkdir()
    (store.local / "configs" / "a.yaml").write_text("x: 1\n")
    store.push("study.json", "configs")
    assert (storage / "configs" / "a.yaml").read_text() == "x: 1\n"
    (store.local / "status.jsonl").write_text('{"event": "session"}\n')
    store.push_status("session")
    with open(store.local / "status.jsonl", "a") as f:
        f.write('{"event": "heartbeat", "run": "a/CartPole-v1/seed-0"}\n')
    store.push_status("heartbeat")
    assert (storage / "status.jsonl").read_text() == '{"event": "session"}\n'
    store.push_status("done")
    assert (storage / "status.jsonl").read_text().count("\n") == 2
    # another machine's driver (a fresh cache) pulls the study back
    (store.local / "study.json").unlink()
    store.pull()
    assert json.loads((store.local / "study.json").read_text())["runs"]
    view = local_copy(uri, run_files=("summary.json",))
    assert (view / RUN / "summary.json").read_text() == json.dumps(SUMMARY)
    assert not (view / RUN / "metrics.csv").exists()
    assert local_copy(storage) == storage
    assert StudyStorage(storage).run_is_complete(RUN, 100)


def test_markers_and_bad_storage(places, tmp_path):
    from explorer_ablation.ray_task import preflight_task
    from explorer_pipeline.errors import UsageError

    _, uri, _ = places
    store = open_study(uri)
    assert store.write_marker(".storage-check", "tok") == uri and read_marker(uri, ".storage-check") == "tok"
    assert preflight_task(uri, ".storage-check", "tok", 0, False)["problems"] == []
    problems = preflight_task(f"file://{tmp_path}/nowhere", ".storage-check", "tok", 0, False)["problems"]
    assert len(problems) == 1 and "cannot reach the study's storage" in problems[0]
    with pytest.raises(UsageError, match="cannot open the study storage 'nosuchfs://x'"):
        open_study("nosuchfs://x")
    with pytest.raises(UsageError, match="holds no ablation study"):
        local_copy(f"file://{tmp_path}/empty")
    assert Remote(uri).read_bytes("missing") is None


def test_the_cli_refuses_a_uri_without_ray_and_an_unknown_protocol(run_cli, write_spec, tmp_path):
    spec = write_spec("""
        name: s
        base: {algo: dqn, steps: 100, provider: none}
        arms: [{name: a}]
        environments: [CartPole-v1]
        seeds: [0]
    """)
    local = run_cli("ablate", str(spec), "--out", f"file://{tmp_path}/study", timeout=120)
    assert local.returncode == 2 and "needs --backend ray" in local.stderr, local.stderr
    assert len([line for line in local.stderr.splitlines() if line.strip()]) == 1
    unknown = run_cli("status", "nosuchfs://bucket/study", timeout=120)
    assert unknown.returncode == 2 and "cannot open the study storage" in unknown.stderr, unknown.stderr
    assert not (tmp_path / "study").exists()
