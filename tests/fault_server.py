"""A fault-injecting OpenAI-compatible chat server for tests (127.0.0.1 only).

The requested ``model`` name picks the behaviour, so one server serves every case:

``good``      a valid answer (stage 2: a distribution or bias matching the request's schema size)
``garbage``   prose without numbers
``nan``       ``{"probabilities": [NaN, ...]}``
``http500``   HTTP 500
``http401``   HTTP 401 (not retried)
``slow``      sleeps ``SLOW_S`` seconds first, then answers like ``good``
``flaky``     HTTP 503 on every other request, ``good`` otherwise
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SLOW_S = 3.0
#: every behaviour, listed by ``GET /v1/models`` (the openai provider's preflight checks the model is offered)
MODELS = ("good", "garbage", "nan", "http500", "http401", "slow", "flaky")


def _size(body: dict) -> tuple[str, int]:
    """Infer the expected answer from the prompt's output-format line."""
    text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    key = "bias" if '{"bias"' in text else "probabilities"
    marker = text.rfind("exactly ")
    n = int(text[marker + 8:].split()[0]) if marker >= 0 else 2
    return key, n


def _completion(content: str, model: str) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
    }


def make_app() -> FastAPI:
    app = FastAPI()
    state: dict = {"requests": 0, "bodies": []}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model"} for name in MODELS]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        state["requests"] += 1
        state["bodies"].append(body)
        model = body.get("model", "good")
        key, n = _size(body)
        is_proposal = "exactly " in " ".join(str(m.get("content", "")) for m in body.get("messages", [])[-1:])
        good = json.dumps({key: [round(1.0 / n, 3)] * n if key == "probabilities" else [-0.3] * n})
        if model == "http500":
            return JSONResponse({"error": {"message": "internal error"}}, status_code=500)
        if model == "http401":
            return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
        if model == "flaky" and state["requests"] % 2 == 1:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if model == "slow":
            await asyncio.sleep(SLOW_S)
        if not is_proposal:
            return _completion("The agent should explore more.", model)
        if model == "garbage":
            return _completion("I am not sure what to say about this agent at all.", model)
        if model == "nan":
            return _completion(json.dumps({key: [float("nan")] * n}), model)
        return _completion(good, model)

    app.state.counters = state
    return app


class ServerThread:
    """Runs the app with uvicorn on a free 127.0.0.1 port in a background thread."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.app = make_app()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="fault-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fault server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
