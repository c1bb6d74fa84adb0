"""The Ray backend on a real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``:
a head without CPUs and small worker nodes, each its own raylet; loopback only).

- A study with more runs than slots, real ``llm-explorer train`` (CartPole, blocking mode,
  scripted provider): one node is killed mid-study while it trains a run; Ray retries that run
  on another node, it resumes from its newest checkpoint and ends byte for byte like its twin
  arm (the same configuration and seed, never interrupted); every run completes exactly once.
- GPU requests without a GPU: a node declaring two GPUs; each run sees exactly the GPU ids Ray
  gave it (whole and fractional requests), a run asking for none sees none; variables passed by
  name reach the runs and are written nowhere; the preflight refuses a node whose GPUs torch
  cannot see.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from .helpers import FAKE_TRAIN, status_events, wait_for

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

import ray
from ray.cluster_utils import Cluster

from explorer_ablation.backends import RayBackend
from explorer_ablation.runner import run_study
from explorer_ablation.spec import load_spec
from explorer_pipeline.errors import UsageError
from tianshou_integration.checkpoint import complete_checkpoints

WALL_CLOCK = {"t_s", "latency_s", "time"}


@pytest.fixture(scope="module")
def cluster():
    """A head node without CPUs (runs never land there) and a connected driver."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _nodes_gone(cluster: Cluster, nodes) -> None:
    for node in nodes:
        if node in cluster.worker_nodes:
            cluster.remove_node(node, allow_graceful=False)


def _jsonl(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK}
            for line in path.read_text().splitlines() if line.strip()]


def _metric_steps(path: Path) -> list[int]:
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]] if path.exists() else []
    return [int(row[0]) for row in rows if len(row) == 3 and row[0].isdigit()]


CLUSTER_SPEC = """
name: cluster
base:
  algo: dqn
  steps: 4000        # long enough that a run is caught training on a fast machine
  provider: scripted
  mode: blocking
  eval_episodes: 2
  config:
    eval: {every: 1000}
    network: {hidden_sizes: [32, 32]}
    checkpoint: {every_steps: 500}
arms:
  - name: a
  - name: b          # the same configuration as a: its runs are the uninterrupted reference
environments: [CartPole-v1]
seeds: [0, 1]
resources: {num_cpus: 1}
runtime: {heartbeat_s: 1, max_retries: 2}
"""


def test_a_node_killed_mid_study_its_run_resumes_elsewhere_and_ends_like_an_uninterrupted_one(cluster, tmp_path):
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]  # 2 slots, 4 runs
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(CLUSTER_SPEC)
    out = tmp_path / "out"
    lines: list[str] = []
    result: dict = {}

    def study() -> None:
        try:
            result["value"] = run_study(load_spec(spec_path), out, RayBackend(address=cluster.address,
                                        runtime=load_spec(spec_path).runtime), spec_path=spec_path, echo=lines.append)
        except BaseException as exc:  # reported by the assertion below
            result["error"] = exc

    driver = threading.Thread(target=study, daemon=True)
    driver.start()
    try:
        # a run on a worker node has a checkpoint past 500 steps and has written rows after it
        victim: dict = {}

        def training_past_a_checkpoint() -> bool:
            for event in status_events(out):
                if event["event"] != "started":
                    continue
                run_dir = out / "runs" / event["run"]
                if (run_dir / "summary.json").exists():
                    continue
                steps = [c.step for c in complete_checkpoints(run_dir)] if run_dir.is_dir() else []
                if steps and max(steps) >= 500 and max(_metric_steps(run_dir / "metrics.csv"), default=0) > max(steps):
                    victim.update(run=event["run"], node=event["node"], dir=run_dir, step=max(steps))
                    return True
            return False

        wait_for(training_past_a_checkpoint, 600, "a run to train past a checkpoint")
        node = next(n for n in nodes if n.node_id == victim["node"])
        cluster.remove_node(node, allow_graceful=False)  # SIGKILL: the raylet, its workers and their train
        nodes.append(cluster.add_node(num_cpus=1))  # a replacement, as an autoscaler would start
        driver.join(timeout=900)
        assert not driver.is_alive(), "the study did not end"
    finally:
        _nodes_gone(cluster, nodes)
    assert "error" not in result, result.get("error")
    outcome = result["value"]
    assert outcome.ok and outcome.done == 4, (outcome, lines[-10:])
    events = status_events(out)
    # every run completed exactly once
    done = [e["run"] for e in events if e["event"] == "done"]
    assert sorted(done) == sorted(f"{arm}/CartPole-v1/seed-{s}" for arm in "ab" for s in (0, 1))
    assert not [e for e in events if e["event"] in ("failed", "interrupted")]
    # the killed run started twice: again on another node, resumed from its checkpoint
    starts = [e for e in events if e["event"] == "started" and e["run"] == victim["run"]]
    assert [s["attempt"] for s in starts] == [1, 2] and starts[1]["resume"] is True
    assert starts[1]["node"] != victim["node"]
    manifest = json.loads((victim["dir"] / "manifest.json").read_text())
    assert manifest["resumes"][-1]["from_step"] >= victim["step"] and manifest["resumes"][-1]["exact"] is True
    # ... and ended exactly as its twin, which was never interrupted
    arm = victim["run"].split("/")[0]
    twin = out / "runs" / ("b" if arm == "a" else "a") / "CartPole-v1" / victim["dir"].name
    assert [e for e in events if e["event"] == "started" and e["run"].startswith(("b" if arm == "a" else "a") + "/")
            and e["run"].endswith(victim["dir"].name) and e.get("attempt", 1) > 1] == []
    assert (victim["dir"] / "metrics.csv").read_bytes() == (twin / "metrics.csv").read_bytes()
    assert _jsonl(victim["dir"] / "updates.jsonl") == _jsonl(twin / "updates.jsonl")
    summaries = [json.loads((d / "summary.json").read_text()) for d in (victim["dir"], twin)]
    timing = {"wall_s", "train_wall_s", "eval_wall_s", "steps_per_s", "checkpoints"}
    killed_summary, twin_summary = ({k: v for k, v in s.items() if k not in timing} for s in summaries)
    assert killed_summary == twin_summary
    # heartbeats told the driver how far runs were
    beats = [e for e in events if e["event"] == "heartbeat"]
    assert beats and all(e["steps"] == 4000 for e in beats) and any((e["step"] or 0) > 0 for e in beats)


GPU_RECORDER = """
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--out") + 1])
record = out.parent / (out.name + ".seen.json")
record.write_text(json.dumps({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
                              "secret_present": os.environ.get("LLMX_TEST_SECRET") == "s3cr3t-value-42"}))
os.execv(sys.executable, [sys.executable, sys.argv[0].replace("recorder.py", "fake_train.py"), *args])
"""

GPU_SPEC = """
name: gpus
base: {algo: dqn, steps: 200, provider: none, options: {fake_sleep: 1}}
arms:
  - name: whole
    resources: {num_gpus: 1}
  - name: half
    resources: {num_gpus: 0.5}
  - name: none
environments: [CartPole-v1]
seeds: [0, 1]
resources: {num_cpus: 0.5}
runtime: {env_vars: [LLMX_TEST_SECRET], check_gpus: false, heartbeat_s: 1}
"""


def test_each_run_sees_only_the_gpus_ray_gave_it_and_variables_pass_by_name_only(cluster, tmp_path, monkeypatch):
    node = cluster.add_node(num_cpus=3, num_gpus=2)
    try:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "fake_train.py").write_text(FAKE_TRAIN.read_text())
        (bin_dir / "recorder.py").write_text(GPU_RECORDER)
        import sys

        train = [sys.executable, str(bin_dir / "recorder.py")]
        spec_path = tmp_path / "spec.yaml"
        spec_path.write_text(GPU_SPEC)
        out = tmp_path / "out"
        monkeypatch.setenv("LLMX_TEST_SECRET", "s3cr3t-value-42")
        spec = load_spec(spec_path)
        outcome = run_study(spec, out, RayBackend(address=cluster.address, runtime=spec.runtime), spec_path=spec_path,
                            train_command=train, echo=lambda line: None)
        assert outcome.ok and outcome.done == 6, outcome
        events = status_events(out)
        started = {e["run"]: e for e in events if e["event"] == "started"}
        for run_id, event in started.items():
            arm, _, seed = run_id.split("/")
            seen = json.loads((out / "runs" / arm / "CartPole-v1" / f"{seed}.seen.json").read_text())
            assert seen["secret_present"] is True
            if arm == "none":
                assert event["gpu_ids"] == [] and seen["cuda"] == ""  # sees no GPU, not every GPU
            else:
                assert len(event["gpu_ids"]) == 1 and event["gpu_ids"][0] in ("0", "1")
                assert seen["cuda"] == event["gpu_ids"][0]
        # the secret's value is nowhere in the study directory nor in Ray's logs; its name is in the spec
        for path in [*out.rglob("*"), *Path(ray._private.worker._global_node.get_session_dir_path()).rglob("*.log")]:
            if path.is_file() and not path.name.endswith(".seen.json"):
                assert b"s3cr3t-value-42" not in path.read_bytes(), path
        # without the variable in the driver's environment: a clear error before anything runs
        monkeypatch.delenv("LLMX_TEST_SECRET")
        with pytest.raises(UsageError, match=r"runtime\.env_vars names LLMX_TEST_SECRET"):
            run_study(spec, tmp_path / "out2", RayBackend(address=cluster.address, runtime=spec.runtime),
                      spec_path=spec_path, train_command=train, echo=lambda line: None)
        assert not (tmp_path / "out2" / "runs").exists()
        # the preflight checks that torch sees the GPUs a node declares (there are none here)
        monkeypatch.setenv("LLMX_TEST_SECRET", "s3cr3t-value-42")
        strict = load_spec(spec_path).model_copy(update={"runtime": spec.runtime.model_copy(
            update={"check_gpus": True})})
        with pytest.raises(UsageError, match=r"declares 2 GPU\(s\) but torch sees 0"):
            run_study(strict, tmp_path / "out3", RayBackend(address=cluster.address, runtime=strict.runtime),
                      spec_path=spec_path, train_command=train, echo=lambda line: None)
        assert not (tmp_path / "out3" / "runs").exists()
    finally:
        _nodes_gone(cluster, [node])


def test_the_preflight_names_a_node_that_does_not_see_the_study_directory(tmp_path):
    from explorer_ablation.ray_task import preflight_task

    (tmp_path / ".storage-check").write_text("driver-token\n")
    assert preflight_task(str(tmp_path), ".storage-check", "driver-token", 0, True)["problems"] == []
    other = preflight_task(str(tmp_path), ".storage-check", "another-token", 0, True)["problems"]
    assert len(other) == 1 and "is not the driver's" in other[0]
    missing = preflight_task(str(tmp_path / "elsewhere"), ".storage-check", "driver-token", 0, True)["problems"]
    assert len(missing) == 1 and "must be on storage every node mounts at the same path" in missing[0]
