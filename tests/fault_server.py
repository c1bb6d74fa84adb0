"""A fault-injecting OpenAI-compatible chat server for tests (127.0.0.1 only).

The requested ``model`` name picks the behaviour, so one server serves every case:

``good``      a valid answer (stage 2: a distribution or bias matching the request's schema size)
``garbage``   prose without numbers
``nan``       ``{"probabilities": [NaN, ...]}``
``http500``   HTTP 500
``http401``   HTTP 401 (not retried)
``slow``      sleeps ``SLOW_S`` seconds first, then answers like ``good``
``flaky``     HTTP 503 on every other request, ``good`` otherwise
``ratelimited``       HTTP 429 with ``Retry-After: RETRY_AFTER_S`` (seconds) for ``RETRY_AFTER_S`` seconds
                      from its first request on, ``good`` after that
``ratelimited-date``  the same with ``Retry-After`` as an HTTP date
``ratelimited-long``  HTTP 429 with ``Retry-After: 3600``, always
``huge``              a valid answer padded to ``huge_bytes`` (``Content-Length`` announced)
``huge-chunked``      the same, streamed without a ``Content-Length``
``badutf8``           a reply whose content holds bytes that are not UTF-8
``long-analysis``     stage 1 answers ``LONG_ANALYSIS_CHARS`` characters; stage 2 like ``good``
``brief``             like ``good`` after ``BRIEF_S`` seconds (the server counts calls in flight)

Two path prefixes change every endpoint below them (``GET /models`` too):

``/drip/v1/...``      the answer comes one byte every ``DRIP_S`` seconds (a slow-drip server)
``/redirect/v1/...``  HTTP 307 to the same path under ``/v1``

Run it in a process of its own with ``python -m tests.fault_server --port N`` (:class:`ServerProcess`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from email.utils import formatdate
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

SLOW_S = 3.0
RETRY_AFTER_S = 1.0
LONG_ANALYSIS_CHARS = 50_000
BRIEF_S = 0.3
DRIP_S = 0.2
#: the default size of ``huge`` replies (2 MiB: twice the client's default cap)
HUGE_BYTES = 2 << 20
#: every behaviour, listed by ``GET /v1/models`` (the openai provider's preflight checks the model is offered)
MODELS = ("good", "garbage", "nan", "http500", "http401", "slow", "flaky", "ratelimited", "ratelimited-date",
          "ratelimited-long", "huge", "huge-chunked", "badutf8", "long-analysis", "brief")


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


def _padded(content: str, model: str, size: int) -> bytes:
    """A completion whose JSON is ``size`` bytes: ``content`` with spaces after it (still parseable)."""
    base = json.dumps(_completion(content, model)).encode()
    return json.dumps(_completion(content + " " * max(0, size - len(base)), model)).encode()


def _dripping(response: Response) -> StreamingResponse:
    body = bytes(response.body)

    async def drip():
        for i in range(len(body)):
            yield body[i:i + 1]
            await asyncio.sleep(DRIP_S)

    return StreamingResponse(drip(), status_code=response.status_code, media_type="application/json")


def make_app(huge_bytes: int = HUGE_BYTES) -> FastAPI:
    app = FastAPI()
    state: dict = {"requests": 0, "bodies": [], "statuses": [], "busy_until": {}, "in_flight": 0, "peak_in_flight": 0}

    def listing() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model"} for name in MODELS]}

    @app.get("/v1/models")
    async def models():
        return listing()

    @app.get("/{mode}/v1/models")
    async def odd_models(mode: str, request: Request):
        if mode == "redirect":
            return RedirectResponse("/v1/models", status_code=307)
        return _dripping(JSONResponse(listing()))

    @app.post("/{mode}/v1/chat/completions")
    async def odd_chat(mode: str, request: Request):
        if mode == "redirect":
            return RedirectResponse("/v1/chat/completions", status_code=307)
        response = await chat(request)
        return _dripping(response)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        response = await answer(request)
        if isinstance(response, dict):
            response = JSONResponse(response)
        state["statuses"].append((state["bodies"][-1].get("model"), response.status_code))
        return response

    async def answer(request: Request):
        body = await request.json()
        state["requests"] += 1
        state["bodies"].append(body)
        model = body.get("model", "good")
        key, n = _size(body)
        is_proposal = "exactly " in " ".join(str(m.get("content", "")) for m in body.get("messages", [])[-1:])
        good = json.dumps({key: [round(1.0 / n, 3)] * n if key == "probabilities" else [-0.3] * n})
        if model.startswith("ratelimited"):
            now = time.time()
            until = state["busy_until"].setdefault(model, now + RETRY_AFTER_S)
            if model == "ratelimited-long":
                return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                    headers={"Retry-After": "3600"})
            if now < until:
                after = (formatdate(math.ceil(until), usegmt=True) if model == "ratelimited-date"
                         else f"{RETRY_AFTER_S:g}")
                return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                    headers={"Retry-After": after})
        if model == "huge":
            return Response(_padded(good if is_proposal else "Explore.", model, huge_bytes),
                            media_type="application/json")
        if model == "huge-chunked":
            data = _padded(good if is_proposal else "Explore.", model, huge_bytes)

            async def chunks():
                for i in range(0, len(data), 1 << 16):
                    yield data[i:i + (1 << 16)]

            return StreamingResponse(chunks(), media_type="application/json")
        if model == "badutf8":
            text = json.dumps(_completion("Explore \u0000MARK", model)).replace("\\u0000MARK", "\xff\xfe MARK")
            return Response(text.encode("latin-1"), media_type="application/json")
        if model == "long-analysis" and not is_proposal:
            return _completion("The agent should explore more. " + "A" * LONG_ANALYSIS_CHARS, model)
        if model == "brief":
            state["in_flight"] += 1
            state["peak_in_flight"] = max(state["peak_in_flight"], state["in_flight"])
            try:
                await asyncio.sleep(BRIEF_S)
            finally:
                state["in_flight"] -= 1
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """Runs the app in a process of its own (``python -m tests.fault_server``) on 127.0.0.1, so that
    its memory and its event loop are not the client's. ``counters()`` reads the server's counters
    (``GET /counters``)."""

    def __init__(self, huge_bytes: int = HUGE_BYTES, retry_after_s: float = RETRY_AFTER_S) -> None:
        self.port = _free_port()
        self.huge_bytes, self.retry_after_s = huge_bytes, retry_after_s
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def url(self, prefix: str) -> str:
        """The base URL under a path prefix (``drip``, ``redirect``)."""
        return f"http://127.0.0.1:{self.port}/{prefix}/v1"

    def counters(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/counters", timeout=10) as reply:
            return json.loads(reply.read())

    def __enter__(self) -> ServerProcess:
        root = Path(__file__).resolve().parent.parent
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fault_server", "--port", str(self.port),
             "--huge-bytes", str(self.huge_bytes), "--retry-after", str(self.retry_after_s)],
            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
        deadline = time.monotonic() + 30
        while True:
            try:
                self.counters()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("fault server process did not start") from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description="The fault-injecting OpenAI-compatible server (127.0.0.1 only).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--huge-bytes", type=int, default=HUGE_BYTES)
    parser.add_argument("--retry-after", type=float, default=RETRY_AFTER_S,
                        help="seconds the ratelimited models ask for")
    args = parser.parse_args()
    globals()["RETRY_AFTER_S"] = args.retry_after  # read by the app's handlers
    app = make_app(args.huge_bytes)

    @app.get("/counters")
    async def counters():
        state = app.state.counters
        return {k: state[k] for k in ("requests", "statuses", "peak_in_flight")}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
