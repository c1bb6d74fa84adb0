"""A study on fsspec storage on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``, loopback).

The storage is fsspec's ``file://`` on a directory of its own; runs train in each node's scratch
directory elsewhere (``LLM_EXPLORER_SCRATCH``, passed through ``runtime_env``) and the driver keeps
its files in a third place (``LLM_EXPLORER_STUDY_CACHE``). One node is killed while a run trains
past a checkpoint it uploaded: Ray retries the run on another node, which downloads the run
directory and resumes from that uploaded checkpoint; the run ends byte for byte like its twin arm
(the same configuration and seed, never interrupted). Then ``--resume`` from a driver with an empty
cache finds every run complete on the storage, and ``status`` / ``report`` read the storage.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from explorer_ablation.backends import RayBackend
from explorer_ablation.runner import run_study
from explorer_ablation.spec import load_spec

from .helpers import status_events, wait_for
from .test_ray_cluster import CLUSTER_SPEC, _jsonl, _metric_steps, _nodes_gone, cluster  # noqa: F401 -- fixture

TIMING = {"wall_s", "train_wall_s", "eval_wall_s", "steps_per_s", "checkpoints"}


def _uploaded_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in run_dir.glob("checkpoints/step-*/meta.json"))


def test_a_killed_node_on_storage_resumes_from_the_uploaded_checkpoint_and_ends_like_an_uninterrupted_run(
        cluster, tmp_path, monkeypatch, run_cli):  # noqa: F811 -- the cluster fixture
    storage, scratch = tmp_path / "bucket", tmp_path / "scratch"
    storage.mkdir()
    uri = f"file://{storage}"
    monkeypatch.setenv("LLM_EXPLORER_STUDY_CACHE", str(tmp_path / "cache"))
    runtime_env = f"runtime_env: {{env_vars: {{LLM_EXPLORER_SCRATCH: '{scratch}'}}}}"
    spec_text = CLUSTER_SPEC.replace("runtime: {heartbeat_s: 1, max_retries: 2}",
                                     f"runtime: {{heartbeat_s: 1, max_retries: 2, {runtime_env}}}")
    assert "LLM_EXPLORER_SCRATCH" in spec_text
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(spec_text)
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]  # 2 slots, 4 runs
    lines: list[str] = []
    result: dict = {}

    def study() -> None:
        try:
            spec = load_spec(spec_path)
            result["value"] = run_study(spec, uri, RayBackend(address=cluster.address, runtime=spec.runtime),
                                        spec_path=spec_path, echo=lines.append)
        except BaseException as exc:  # reported by the assertion below
            result["error"] = exc

    driver = threading.Thread(target=study, daemon=True)
    driver.start()
    victim: dict = {}
    try:
        def training_past_an_uploaded_checkpoint() -> bool:
            for event in status_events(storage):  # the driver's events, as uploaded
                if event["event"] != "started":
                    continue
                stored = storage / "runs" / event["run"]
                uploaded = _uploaded_steps(stored)
                if (stored / "summary.json").exists() or not uploaded or uploaded[-1] < 500:
                    continue
                local = [p for p in scratch.rglob(f"runs/{event['run']}/metrics.csv")]
                if local and max(_metric_steps(local[0]), default=0) > uploaded[-1]:
                    victim.update(run=event["run"], node=event["node"], dir=stored, step=uploaded[-1])
                    return True
            return False

        wait_for(training_past_an_uploaded_checkpoint, 600, "a run to train past an uploaded checkpoint")
        node = next(n for n in nodes if n.node_id == victim["node"])
        cluster.remove_node(node, allow_graceful=False)  # SIGKILL: the raylet, its workers and their train
        nodes.append(cluster.add_node(num_cpus=1))
        driver.join(timeout=900)
        assert not driver.is_alive(), "the study did not end"
    finally:
        _nodes_gone(cluster, nodes)
    assert "error" not in result, result.get("error")
    outcome = result["value"]
    assert outcome.ok and outcome.done == 4, (outcome, lines[-10:])
    events = status_events(storage)
    done = [e["run"] for e in events if e["event"] == "done"]
    assert sorted(done) == sorted(f"{arm}/CartPole-v1/seed-{s}" for arm in "ab" for s in (0, 1))
    assert not [e for e in events if e["event"] in ("failed", "interrupted")]
    starts = [e for e in events if e["event"] == "started" and e["run"] == victim["run"]]
    assert [s["attempt"] for s in starts] == [1, 2] and starts[1]["resume"] is True
    assert starts[1]["node"] != victim["node"]
    # the retry resumed from the checkpoint it found on the storage (or a newer upload)
    manifest = json.loads((victim["dir"] / "manifest.json").read_text())
    assert manifest["resumes"][-1]["from_step"] >= victim["step"] and manifest["resumes"][-1]["exact"] is True
    # ... and ended exactly as its twin, which was never interrupted
    arm = victim["run"].split("/")[0]
    twin = storage / "runs" / ("b" if arm == "a" else "a") / "CartPole-v1" / victim["dir"].name
    assert (victim["dir"] / "metrics.csv").read_bytes() == (twin / "metrics.csv").read_bytes()
    assert _jsonl(victim["dir"] / "updates.jsonl") == _jsonl(twin / "updates.jsonl")
    killed, uninterrupted = ({k: v for k, v in json.loads((d / "summary.json").read_text()).items()
                              if k not in TIMING} for d in (victim["dir"], twin))
    assert killed == uninterrupted
    # nothing trained in place on the storage, nothing of a run on the driver's side, scratch cleared
    assert not list((storage / "runs").rglob(".lock"))
    assert not list((tmp_path / "cache").rglob("summary.json"))
    assert not list(scratch.rglob("summary.json"))
    assert (storage / "logs").is_dir() and (storage / "study.json").is_file()
    # a driver on another machine (an empty cache): --resume reads completeness from the storage
    monkeypatch.setenv("LLM_EXPLORER_STUDY_CACHE", str(tmp_path / "cache2"))
    spec = load_spec(spec_path)
    again = run_study(spec, uri, RayBackend(address=cluster.address, runtime=spec.runtime), spec_path=spec_path,
                      resume=True, echo=lambda line: None)
    assert again.ok and again.already_complete == 4 and again.done == 4
    status = run_cli("status", uri, timeout=300)
    assert status.returncode == 0 and status.stdout.startswith("4 runs: 0 queued, 0 running, 4 done"), status
    report = run_cli("report", uri, timeout=300)
    assert report.returncode == 0 and f"report: {uri}/report.md" in report.stdout, report
    rows = (storage / "summary.csv").read_text().splitlines()[1:]
    assert len(rows) == 4 and all(",complete," in row for row in rows)
