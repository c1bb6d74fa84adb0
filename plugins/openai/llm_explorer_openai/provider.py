"""The ``openai`` provider: LangChain ``ChatOpenAI`` for OpenAI and OpenAI-compatible servers.

The API key is read from an environment variable only (``OPENAI_API_KEY`` by default; choose
another with ``--option api_key_env=NAME``). It is held as a pydantic ``SecretStr`` by
ChatOpenAI and never written to logs or manifests.

Options (``--option KEY=VALUE``):

``api_key_env``
    the environment variable holding the key.
``server``
    ``openai`` (default without ``--base-url``), ``llamacpp`` (default with ``--base-url``),
    ``vllm`` or ``ollama``: picks the stage-2 structured-output method and how the token cap is
    sent. llama.cpp's server ignores ``max_completion_tokens`` (which ChatOpenAI sends) and rejects
    ``response_format`` type ``json_schema``, so for it the cap goes in the request body as
    ``max_tokens`` and stage 2 uses ``json_object`` with a ``schema``.
``logprobs``
    ``on`` or ``off``: whether the server returns token log-probabilities (OpenAI's
    ``logprobs``/``top_logprobs``, what the ``token-probabilities`` proposer reads). Default: on
    for ``openai``, ``vllm`` and ``llamacpp``, off for ``ollama``.
``preflight``
    ``on`` (default) or ``off``: before training, check the server (:meth:`OpenAIProvider.preflight`:
    it answers, accepts the key and offers the model). ``off`` for a server that starts after
    the run does.

Options for shared servers (docs/providers.md, *Shared servers*; bounds in :data:`NUMBERS`):
``retry_max_attempts``, ``retry_base_s``, ``retry_cap_s``, ``retry_deadline_s`` (how 429/503
answers, timeouts and connection errors are retried: full-jitter exponential backoff,
``Retry-After`` honoured, a total deadline per stage), ``max_concurrent`` and
``requests_per_minute`` (a limit per endpoint, shared by every run in the process:
:mod:`explorer_pipeline.ratelimit`), ``max_reply_bytes`` (larger replies are refused as bad
replies), ``preflight_deadline_s`` (the whole preflight ends within it), and
``allow_insecure_http`` (send the API key over plain http to a host that is not this machine).

The HTTP policy (:mod:`llm_explorer_openai.transport`): redirects are never followed, replies
are capped and must be UTF-8, and a ``--base-url`` with credentials in it is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import os
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import openai
from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletion

from explorer_pipeline import Provider, ProviderSettings, UsageError
from explorer_pipeline.llm import RetryPolicy, bad_reply_in
from explorer_pipeline.ratelimit import Limiter, limiter_for

from .transport import RedirectRefused, guarded_async_client, guarded_client, redact_url

SERVERS = {
    # server: (default structured-output method, token cap in the request body as max_tokens,
    #          returns token log-probabilities)
    "openai": ("json_schema", False, True),
    "llamacpp": ("json_object_schema", True, True),
    "vllm": ("json_schema", True, True),
    "ollama": ("json_schema", True, False),
}
_SWITCHES = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}
DEFAULT_MODEL = "gpt-4o-mini"
LOCAL_PLACEHOLDER_KEY = "sk-no-key-required"


@dataclass(frozen=True)
class Number:
    """A numeric provider option: its type, bounds (inclusive), default and help."""

    kind: type
    low: float
    high: float
    default: float | None
    help: str

    def read(self, name: str, value: str | None) -> Any:
        """The option's value from its text (UsageError naming the option and the bounds)."""
        if value is None:
            return None if self.default is None else self.kind(self.default)
        what = "a whole number" if self.kind is int else "a number"
        try:
            number = self.kind(value.strip())
        except ValueError:
            number = None
        if number is None or not math.isfinite(number) or not self.low <= number <= self.high:
            low, high = (f"{int(b)}" if self.kind is int else f"{b:g}" for b in (self.low, self.high))
            raise UsageError(f"openai provider option {name} must be {what} from {low} to {high} "
                             f"({self.help}), got {value!r}")
        return number


NUMBERS = {
    "retry_max_attempts": Number(int, 1, 100, None, "calls per stage before a request fails; "
                                 "default: explorer.max_attempts"),
    "retry_base_s": Number(float, 0.0, 60.0, 0.5, "the first backoff's upper bound in seconds; the n-th is "
                           "uniform up to min(retry_cap_s, retry_base_s * 2^(n-1)); 0: no waits"),
    "retry_cap_s": Number(float, 0.0, 600.0, 30.0, "the longest backoff in seconds when the server sends no "
                          "Retry-After"),
    "retry_deadline_s": Number(float, 1.0, 3600.0, 120.0, "all attempts and waits of one stage end within "
                               "this many seconds; a Retry-After past it ends the retries at once"),
    "max_concurrent": Number(int, 1, 100_000, None, "calls in flight to this endpoint at once, shared by "
                             "every run in the process; default: no limit"),
    "requests_per_minute": Number(float, 0.01, 1_000_000.0, None, "calls started per minute to this endpoint, "
                                  "shared by every run in the process; default: no limit"),
    "max_reply_bytes": Number(int, 1024, 1 << 30, float(1 << 20), "a larger reply is refused as a bad reply "
                              "before it is read on; default 1 MiB"),
    "preflight_deadline_s": Number(float, 1.0, 600.0, 30.0, "the whole preflight (model listing and "
                                   "one-token call) ends within this many seconds"),
}
OPTIONS = ("api_key_env", "server", "logprobs", "preflight", "allow_insecure_http", *NUMBERS)
#: the longest the preflight waits for the model listing (the one-token call gets the call timeout)
PREFLIGHT_TIMEOUT_S = 10.0
#: model names an unknown-model error lists, and the manifest records
LISTED_MODELS = 10
RECORDED_MODELS = 50
#: query parameters of a --base-url that carry a credential (refused like user:token@)
_SECRET_QUERY = re.compile(r"key|token|secret|password|passwd|signature|sig$|auth", re.IGNORECASE)
#: statuses of a server without a model listing (a one-token call checks the model instead)
_NO_LISTING = (404, 405, 501)


def check_base_url(url: str | None) -> None:
    """UsageError unless ``url`` (``--base-url``) is an absolute http(s) URL with a host and
    without credentials (``user:token@host``, or a query parameter such as ``api_key=``: refused,
    and the message does not repeat them)."""
    if url is None:
        return
    if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
        raise UsageError(f"--base-url {redact_url(url)!r} carries credentials (user:token@host), which would be "
                         "recorded with the run; remove them and put the key in an environment variable "
                         "(OPENAI_API_KEY, or --option api_key_env=NAME)")
    query = url.split("?", 1)[1] if "?" in url else ""
    secret = sorted({name for name, _ in parse_qsl(query.split("#")[0], keep_blank_values=True)
                     if _SECRET_QUERY.search(name)})
    if secret:
        raise UsageError(f"--base-url {redact_url(url)!r} carries a credential in its query ({', '.join(secret)}), "
                         "which would be recorded with the run; remove it and put the key in an environment "
                         "variable (OPENAI_API_KEY, or --option api_key_env=NAME)")
    try:
        parts = urlsplit(url)
        valid = (parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
                 and not any(c.isspace() for c in url))
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        raise UsageError(f"--base-url {url!r} is not an http(s) URL with a host; expected e.g. http://127.0.0.1:8080/v1")


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_with_deadline(make_coro: Any, deadline_s: float) -> Any:
    """Run the coroutine ``make_coro()`` on an event loop of its own (in a thread of its own, so
    that a caller inside a running loop works too), cancelled after ``deadline_s``:
    ``TimeoutError`` then. Its result, or the error it raised."""
    box: dict[str, Any] = {}

    async def bounded() -> Any:
        async with asyncio.timeout(deadline_s):
            return await make_coro()

    def target() -> None:
        try:
            box["result"] = asyncio.run(bounded())
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="openai-preflight", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _says(exc: openai.APIStatusError) -> str:
    """``: <the server's error message>`` (one line, short), or nothing when it sent none."""
    body = exc.body
    text = body.get("message") or body.get("detail") if isinstance(body, dict) else body
    return f": {_one_line(text, 160)}" if text else ""


def _offers(offered: list[str], name: str) -> bool:
    # Ollama lists "llama3:latest" and answers to "llama3"
    return name in offered or f"{name}:latest" in offered


def _got_logprobs(completion: Any) -> bool:
    choices = getattr(completion, "choices", None) or []
    logprobs = getattr(choices[0], "logprobs", None) if choices else None
    content = getattr(logprobs, "content", None) or []
    return bool(content and getattr(content[0], "top_logprobs", None))


class OpenAIProvider(Provider):
    """The ``openai`` provider (see the module docstring for its options)."""

    name = "openai"
    description = "OpenAI, or any OpenAI-compatible server with --base-url (vLLM, Ollama, llama.cpp)"
    structured_output_methods = ("json_schema", "function_calling", "json_object_schema", "none")
    supports_logprobs = True
    transient_errors = (
        TimeoutError, ConnectionError, openai.APIConnectionError, openai.APITimeoutError,
        openai.RateLimitError, openai.InternalServerError, openai.LengthFinishReasonError,
    )

    def _server(self, settings: ProviderSettings) -> str:
        server = settings.options.get("server") or ("llamacpp" if settings.base_url else "openai")
        if server not in SERVERS:
            raise UsageError(f"unknown openai server kind {server!r}; allowed: {', '.join(SERVERS)}")
        return server

    def default_structured_output(self, settings: ProviderSettings) -> str:
        """The strictest stage-2 method the chosen server kind accepts."""
        return SERVERS[self._server(settings)][0]

    def model_name(self, settings: ProviderSettings) -> str:
        """The ``--model``, else ``gpt-4o-mini``."""
        return settings.model or DEFAULT_MODEL

    def create(self, settings: ProviderSettings) -> BaseChatModel:
        """A ``ChatOpenAI`` with its own HTTP client; UsageError for a bad option, or without a key
        when the model is OpenAI's own (no ``--base-url``)."""
        unknown = set(settings.options) - set(OPTIONS)
        if unknown:
            raise UsageError(f"unknown openai provider option(s) {sorted(unknown)}; allowed: {', '.join(OPTIONS)}")
        check_base_url(settings.base_url)
        self._server(settings)
        self.logprobs_unsupported(settings)
        self._preflight_on(settings)
        numbers = {name: self._number(settings, name) for name in NUMBERS}
        self._switch(settings, "allow_insecure_http", False)
        key_env = self._key_env(settings)
        api_key = os.environ.get(key_env)
        if not api_key:
            if settings.base_url is None:
                raise UsageError(f"the openai provider needs an API key: set the environment variable {key_env}")
            api_key = LOCAL_PLACEHOLDER_KEY  # OpenAI-compatible local servers accept any key
        else:
            self._check_key_transport(settings, key_env)
        max_bytes = numbers["max_reply_bytes"]
        return ChatOpenAI(
            model=self.model_name(settings), base_url=settings.base_url, api_key=api_key,
            temperature=settings.temperature, timeout=settings.timeout_s, max_retries=0,
            use_responses_api=False, seed=settings.seed,
            # clients of this model's own (langchain-openai shares a cached async client across
            # models, which breaks when each explorer runs its own event loop), both with the one
            # HTTP policy of .transport: no redirects, a reply cap, UTF-8 only
            http_client=guarded_client(max_bytes, settings.timeout_s),
            http_async_client=guarded_async_client(max_bytes, settings.timeout_s),
        )

    @staticmethod
    def _number(settings: ProviderSettings, name: str) -> Any:
        return NUMBERS[name].read(name, settings.options.get(name))

    @staticmethod
    def _switch(settings: ProviderSettings, name: str, default: bool) -> bool:
        value = settings.options.get(name)
        if value is None:
            return default
        switch = _SWITCHES.get(value.strip().lower())
        if switch is None:
            raise UsageError(f"openai provider option {name} must be on or off (true or false), got {value!r}")
        return switch

    def _check_key_transport(self, settings: ProviderSettings, key_env: str) -> None:
        """UsageError when the key would travel over plain http to another machine (unless
        ``allow_insecure_http``)."""
        insecure = self._switch(settings, "allow_insecure_http", False)
        if settings.base_url is None or insecure:
            return
        parts = urlsplit(settings.base_url)
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise UsageError(f"refusing to send the API key in {key_env} over plain http to {parts.hostname}, which "
                             "is not this machine: use an https --base-url, or --option allow_insecure_http=true "
                             "on a network you trust")

    def retry_policy(self, settings: ProviderSettings, max_attempts: int) -> RetryPolicy:
        """Full-jitter exponential backoff, ``Retry-After`` honoured, within ``retry_deadline_s``
        per stage (the ``retry_*`` options)."""
        attempts = self._number(settings, "retry_max_attempts")
        return RetryPolicy(max_attempts=attempts or max_attempts, initial_wait_s=self._number(settings, "retry_base_s"),
                           max_wait_s=self._number(settings, "retry_cap_s"),
                           deadline_s=self._number(settings, "retry_deadline_s"))

    def limiter(self, settings: ProviderSettings) -> Limiter | None:
        """The process-wide limiter of this endpoint (``max_concurrent``, ``requests_per_minute``)."""
        return limiter_for(settings.base_url or "https://api.openai.com/v1",
                           self._number(settings, "max_concurrent"), self._number(settings, "requests_per_minute"))

    def max_reply_bytes(self, settings: ProviderSettings) -> int:
        """The ``max_reply_bytes`` option (1 MiB by default)."""
        return int(self._number(settings, "max_reply_bytes"))

    @staticmethod
    def _key_env(settings: ProviderSettings) -> str:
        return settings.options.get("api_key_env", "OPENAI_API_KEY")

    @staticmethod
    def _preflight_on(settings: ProviderSettings) -> bool:
        value = settings.options.get("preflight", "on")
        switch = _SWITCHES.get(value.strip().lower())
        if switch is None:
            raise UsageError(f"openai provider option preflight must be on or off, got {value!r}")
        return switch

    def preflight(self, model: BaseChatModel, settings: ProviderSettings, *,
                  logprobs: bool = False) -> dict[str, Any]:
        """Before training: the server answers, accepts the key and offers the model.

        It lists the server's models (``GET /models``, at most 10 s); a server without that
        listing gets a one-token chat call instead, and so does a run whose proposer reads token
        log-probabilities (``logprobs``: whether they come back is recorded). A server nobody
        answers at, a rejected or missing key, a model the server does not offer, a redirect, or
        a server that has not finished within ``preflight_deadline_s`` (30 s; a server that sends
        its answer a byte at a time included) is a one-line :class:`UsageError`; an HTTP 429 or
        5xx answer is recorded as a warning (the run's own requests are retried as usual).
        ``--option preflight=off`` skips all of it.
        """
        if not self._preflight_on(settings):
            return {"checked": "off"}
        root = getattr(model, "root_async_client", None)
        if not isinstance(root, openai.AsyncOpenAI):  # not a model this provider built: nothing to check with
            return super().preflight(model, settings, logprobs=logprobs)
        url = redact_url(settings.base_url or str(root.base_url).rstrip("/"))
        deadline = self._number(settings, "preflight_deadline_s")
        max_bytes = self.max_reply_bytes(settings)

        async def check() -> dict[str, Any]:
            # a client of the preflight's own: an httpx client's connections belong to one event loop
            client = root.with_options(http_client=guarded_async_client(max_bytes, settings.timeout_s), max_retries=0)
            try:
                return await self._apreflight(client, url, settings, logprobs)
            finally:
                await client.close()

        try:
            return run_with_deadline(check, deadline)
        except TimeoutError:
            raise UsageError(f"the server at {url} did not finish answering the preflight within {deadline:g} s "
                             "(--option preflight_deadline_s=SECONDS; --option preflight=off skips this check)"
                             ) from None
        except RedirectRefused as exc:
            raise UsageError(str(exc)) from None

    async def _apreflight(self, root: openai.AsyncOpenAI, url: str, settings: ProviderSettings,
                          logprobs: bool) -> dict[str, Any]:
        server = self._server(settings)
        name = self.model_name(settings)
        found: dict[str, Any] = {
            "checked": "models", "base_url": url, "server": server, "model": name,
            "structured_output": settings.structured_output or self.default_structured_output(settings),
        }
        warnings: list[str] = []
        listing_timeout = min(settings.timeout_s, PREFLIGHT_TIMEOUT_S)
        offered: list[str] | None = None
        try:
            page = await root.with_options(timeout=listing_timeout).models.list()
            offered = sorted({i for i in (getattr(m, "id", None) for m in page.data) if isinstance(i, str)})
        except openai.APIConnectionError as exc:
            raise UsageError(self._unreachable(url, exc, listing_timeout, settings)) from None
        except openai.APIStatusError as exc:
            self._raise_for_key(url, exc, settings)
            if exc.status_code not in _NO_LISTING:
                warnings.append(f"GET /models answered HTTP {exc.status_code}")
        except RedirectRefused:
            raise
        except Exception as exc:  # an answer that is no model listing (a web page?): the chat call tells
            bad = bad_reply_in(exc)
            why = f"reply refused: {bad.detail}" if bad is not None else type(exc).__name__
            warnings.append(f"GET /models gave no model listing ({why})")
        if offered:
            found["models_offered"] = offered[:RECORDED_MODELS]
            if not _offers(offered, name):
                listing = ", ".join(offered[:LISTED_MODELS])
                if len(offered) > LISTED_MODELS:
                    listing += f" (and {len(offered) - LISTED_MODELS} more)"
                default = " (the default; choose one with --model)" if settings.model is None else ""
                raise UsageError(f"model {name!r}{default} is not offered by the server at {url}; it offers: {listing}")
        declared = self.logprobs_unsupported(settings) is None
        found["logprobs"] = declared
        if not offered or (logprobs and declared):
            if not offered:
                found["checked"] = "chat"
            probed = await self._one_token(root, url, name, server, settings, logprobs and declared, warnings)
            if probed is not None and logprobs and declared:
                found["logprobs"] = probed
                found["logprobs_probed"] = True
        if warnings:
            found["warnings"] = warnings
        return found

    async def _one_token(self, root: openai.AsyncOpenAI, url: str, name: str, server: str,
                         settings: ProviderSettings, logprobs: bool, warnings: list[str]) -> bool | None:
        """One one-token chat call; whether its answer carried token log-probabilities (``None``:
        no answer to tell, noted in ``warnings``)."""
        kwargs: dict[str, Any] = {"max_tokens": 1} if SERVERS[server][1] else {"max_completion_tokens": 1}
        if logprobs:
            kwargs.update(logprobs=True, top_logprobs=2)
        try:
            completion = await root.with_options(timeout=settings.timeout_s).chat.completions.create(
                model=name, messages=[{"role": "user", "content": "Answer with one letter: A or B?"}], **kwargs)
        except openai.APIConnectionError as exc:
            raise UsageError(self._unreachable(url, exc, settings.timeout_s, settings)) from None
        except openai.APIStatusError as exc:
            self._raise_for_key(url, exc, settings)
            if exc.status_code == 404:
                raise UsageError(f"model {name!r} is not offered by the server at {url}, or that is not the API's "
                                 f"root (usually ending in /v1): a chat call answered HTTP 404{_says(exc)}") from None
            warnings.append(f"a one-token chat call answered HTTP {exc.status_code}{_says(exc)}")
            return None
        except openai.APIError as exc:  # an answer the client could not read
            warnings.append(f"a one-token chat call: {type(exc).__name__}: {_one_line(exc, 120)}")
            return None
        except RedirectRefused:
            raise
        except Exception as exc:
            bad = bad_reply_in(exc)
            if bad is None:
                raise
            warnings.append(f"a one-token chat call: reply refused: {bad.detail}")
            return None
        if not isinstance(completion, ChatCompletion) or not getattr(completion, "choices", None):
            raise UsageError(f"the server at {url} does not answer like an OpenAI-compatible server (no chat "
                             "completion came back); is that the API's root (usually ending in /v1)?")
        return _got_logprobs(completion)

    @staticmethod
    def _unreachable(url: str, exc: openai.APIConnectionError, timeout_s: float, settings: ProviderSettings) -> str:
        if isinstance(exc, openai.APITimeoutError):
            why = f"no answer within {timeout_s:g} s"
        else:
            why = _one_line(exc.__cause__ or exc, 120)
        fix = "start it or fix --base-url" if settings.base_url else "check the network connection"
        return f"cannot reach the server at {url} ({why}); {fix} (--option preflight=off skips this check)"

    def _raise_for_key(self, url: str, exc: openai.APIStatusError, settings: ProviderSettings) -> None:
        """UsageError naming the key's variable for an HTTP 401 or 403 (never the key itself, nor
        the server's message, which may quote part of it)."""
        if exc.status_code not in (401, 403):
            return
        key_env = self._key_env(settings)
        if os.environ.get(key_env):
            message = (f"the server at {url} rejected the API key in the environment variable {key_env} "
                       f"(HTTP {exc.status_code}); set {key_env} to a key it accepts")
        else:
            message = (f"the server at {url} requires an API key (HTTP {exc.status_code}): set the environment "
                       f"variable {key_env} (or name another with --option api_key_env=NAME)")
        raise UsageError(message) from None

    def logprobs_unsupported(self, settings: ProviderSettings) -> str | None:
        """``None`` when the server kind returns log-probabilities (or ``--option logprobs=on``)."""
        server = self._server(settings)
        value = settings.options.get("logprobs")
        if value is not None and value.strip().lower() not in _SWITCHES:
            raise UsageError(f"openai provider option logprobs must be on or off, got {value!r}")
        if _SWITCHES.get((value or "").strip().lower(), SERVERS[server][2]):
            return None
        how = "--option logprobs=off" if value is not None else f"server {server!r} (--option logprobs=on if it does)"
        return f"provider 'openai' returns no token log-probabilities with {how}"

    def token_kwargs(self, max_tokens: int, settings: ProviderSettings) -> dict[str, Any]:
        """How the token cap is sent: in the request body as ``max_tokens`` for servers that ignore ChatOpenAI's own."""
        if SERVERS[self._server(settings)][1]:
            return {"extra_body": {"max_tokens": max_tokens}}
        return {"max_tokens": max_tokens}
