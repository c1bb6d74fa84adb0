"""The provider preflight with real components: a setup that cannot work (malformed URL, closed
port, model the real llama.cpp server does not offer, key it rejects) stops ``llm-explorer
train`` with one line and exit status 2 before anything is trained or written; a working one is
recorded in the manifest as ``provider_check``."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from explorer_pipeline import ActionSpec, EpisodeRecord, ExplorationUpdate, ExplorerConfig, UsageError, open_explorer
from explorer_pipeline.session import StageChoice

from .conftest import LlamaServer

pytestmark = pytest.mark.integration

CARTPOLE = ActionSpec.discrete(2, ["push cart to the left", "push cart to the right"])
SERVER_KEY = "sk-llama-server-key-271828"


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there once the socket is closed


def train(out: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "explorer_pipeline", "train", "--env", "CartPole-v1", "--algo", "dqn",
           "--provider", "openai", "--steps", "200", "--eval-episodes", "2", "--out", str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**(env if env is not None else os.environ), "TQDM_DISABLE": "1"})


@pytest.fixture(scope="module")
def keyed_llama_server(tmp_path_factory):
    """A llama.cpp server of this module's own that wants ``SERVER_KEY`` (``--api_key``)."""
    server = LlamaServer(tmp_path_factory.mktemp("keyed-llama") / "server.log")
    server.cmd += ["--api_key", SERVER_KEY]
    try:
        server.spawn()
        deadline = time.monotonic() + 120
        while True:
            assert server.proc is not None and server.proc.poll() is None, f"server exited; see {server.log_path}"
            assert time.monotonic() < deadline, f"server did not answer; see {server.log_path}"
            request = urllib.request.Request(f"{server.base_url}/models",
                                             headers={"Authorization": f"Bearer {SERVER_KEY}"})
            with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=2) as reply:
                if reply.status == 200:
                    break
            time.sleep(0.3)
        yield server
    finally:
        server.stop()


def without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}


@pytest.mark.parametrize("case", ["malformed URL", "closed port", "unknown model", "missing key"])
def test_train_stops_before_training_with_one_line(request, tmp_path, case):
    out = tmp_path / "run"
    env = None
    if case == "malformed URL":
        args, expected = ["--base-url", "not-a-url"], "Error: --base-url 'not-a-url' is not an http(s) URL"
    elif case == "closed port":
        url = closed_port_url()
        args, expected = ["--base-url", url], f"Error: cannot reach the server at {url} ("
    elif case == "unknown model":
        url = request.getfixturevalue("llama_server").base_url
        args = ["--base-url", url, "--model", "no-such-model"]
        expected = f"Error: model 'no-such-model' is not offered by the server at {url}; it offers: smollm2"
    else:
        url = request.getfixturevalue("keyed_llama_server").base_url
        args, env = ["--base-url", url, "--model", "smollm2"], without_key()
        expected = (f"Error: the server at {url} requires an API key (HTTP 401): "
                    "set the environment variable OPENAI_API_KEY")
    result = train(out, *args, env=env)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr[-2000:]
    # nothing trained, nothing written: the same --out is free for the next try
    assert not out.exists() and not (out / "metrics.csv").exists()


def test_train_records_the_check_in_the_manifest(llama_server, tmp_path):
    out = tmp_path / "run"
    # K larger than the run's episodes: no update is asked for, the run only has to get past the preflight
    result = train(out, "--base-url", llama_server.base_url, "--model", "smollm2", "--k", "1000")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "metrics.csv").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    check = manifest["explorer"]["provider_check"]
    assert check["checked"] == "models" and check["models_offered"] == ["smollm2"]
    assert check["base_url"] == llama_server.base_url and check["structured_output"] == "json_object_schema"
    assert check["logprobs"] is True and "warnings" not in check
    assert "sk-local-test-key" not in (out / "manifest.json").read_text()


def test_a_logprob_proposer_gets_its_logprobs_probed(llama_server):
    config = ExplorerConfig(provider="openai", base_url=llama_server.base_url, model="smollm2",
                            prompt_set="paper-logprobs", proposer="token-probabilities")
    with open_explorer(config, "CartPole-v1", CARTPOLE) as explorer:
        check = explorer.manifest()["provider_check"]
    # a real one-token answer from the server carried the top log-probabilities
    assert check["logprobs"] is True and check["logprobs_probed"] is True and check["checked"] == "models"
    with open_explorer(config.model_copy(update={"proposer": StageChoice()}), "CartPole-v1", CARTPOLE) as explorer:
        assert "logprobs_probed" not in explorer.manifest()["provider_check"]  # the text proposer needs none


def test_a_key_the_server_rejects_names_the_variable(keyed_llama_server, monkeypatch):
    config = ExplorerConfig(provider="openai", base_url=keyed_llama_server.base_url, model="smollm2",
                            provider_options={"api_key_env": "MY_LLAMA_KEY"})
    monkeypatch.setenv("MY_LLAMA_KEY", "sk-not-the-servers-key-1234")
    with pytest.raises(UsageError) as info:
        open_explorer(config, "CartPole-v1", CARTPOLE)
    assert str(info.value) == (f"the server at {keyed_llama_server.base_url} rejected the API key in the environment "
                               "variable MY_LLAMA_KEY (HTTP 401); set MY_LLAMA_KEY to a key it accepts")
    assert "sk-not-the" not in str(info.value)
    monkeypatch.setenv("MY_LLAMA_KEY", SERVER_KEY)
    with open_explorer(config, "CartPole-v1", CARTPOLE) as explorer:
        assert explorer.manifest()["provider_check"]["models_offered"] == ["smollm2"]


def test_preflight_off_and_replay_need_no_server(tmp_path):
    url = closed_port_url()
    with pytest.raises(UsageError, match="cannot reach the server"):
        open_explorer(ExplorerConfig(provider="openai", base_url=url, model="m"), "CartPole-v1", CARTPOLE)
    off = ExplorerConfig(provider="openai", base_url=url, model="m", provider_options={"preflight": "off"})
    with open_explorer(off, "CartPole-v1", CARTPOLE) as explorer:
        assert explorer.manifest()["provider_check"] == {"checked": "off"}
    replay = ExplorerConfig(provider="openai", base_url=url, model="m", response_cache=tmp_path / "r.sqlite",
                            replay=True)
    with open_explorer(replay, "CartPole-v1", CARTPOLE) as explorer:
        assert explorer.manifest()["provider_check"] == {"checked": "off", "why": "replay"}


def test_scripted_provider_checks_nothing():
    with open_explorer(ExplorerConfig(provider="scripted"), "CartPole-v1", CARTPOLE) as explorer:
        assert explorer.manifest()["provider_check"] == {"checked": "none", "structured_output": "none",
                                                         "logprobs": False}


def test_a_server_without_logprobs_is_found_before_training(fault_server):
    """The fault server answers chat calls but never returns log-probabilities: the preflight's
    probe finds that, so ``token-probabilities`` stops with one line while the explorer is built,
    and ``auto`` falls back to text proposals, saying why in the update."""
    config = ExplorerConfig(provider="openai", base_url=fault_server.base_url, model="good",
                            prompt_set="paper-logprobs", proposer="token-probabilities")
    with pytest.raises(UsageError) as info:
        open_explorer(config, "CartPole-v1", CARTPOLE)
    assert "returned no token log-probabilities when the preflight asked for them" in str(info.value)
    assert "\n" not in str(info.value)
    auto = config.model_copy(update={"proposer": StageChoice(name="auto")})
    with open_explorer(auto, "CartPole-v1", CARTPOLE) as explorer:
        assert explorer.manifest()["provider_check"]["logprobs"] is False
        outcome = explorer.runtime.submit_and_wait(
            EpisodeRecord(10.0, 10, "CartPole-v1", 0, (0, 1) * 5), timeout=60)
    assert isinstance(outcome, ExplorationUpdate)
    assert "returned no token log-probabilities" in outcome.provenance.notes["proposer"]["fallback"]
