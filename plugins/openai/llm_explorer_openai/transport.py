"""The HTTP layer of the ``openai`` provider: one policy for the preflight and every call.

:func:`guarded_client` and :func:`guarded_async_client` build httpx clients whose response hook
applies it (a hook, not a transport, so that proxies from the environment still work):

- **no redirects**: a 3xx answer is :class:`RedirectRefused`, naming where it points (a key must
  not follow a redirect to another host, and a preflight that followed one would pass while every
  call fails);
- **a reply cap**: a body larger than ``max_reply_bytes`` (announced in ``Content-Length`` or
  counted while it arrives) is refused as a :class:`~explorer_pipeline.errors.BadReply` before
  more of it is read, so a 100 MiB reply never sits in memory;
- **UTF-8**: the body of a successful answer that is not valid UTF-8 is refused the same way.

The clients ask for ``Accept-Encoding: identity``: the cap counts the bytes as sent, and the
core checks the decoded text again (:func:`explorer_pipeline.llm.check_reply`).

The OpenAI SDK wraps whatever the transport raises in its own ``APIConnectionError``; the core
finds a ``BadReply`` behind it (:func:`explorer_pipeline.llm.bad_reply_in`), and so does the
preflight for :class:`RedirectRefused`.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx

from explorer_pipeline.errors import BadReply, ProviderError

__all__ = ["RedirectRefused", "guarded_async_client", "guarded_client", "redact_url"]

#: headers the clients send with every request
CLIENT_HEADERS = {"Accept-Encoding": "identity"}


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment (what may appear in messages and logs)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "(an unreadable URL)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RedirectRefused(ProviderError):
    """The server answered with a redirect; redirects are never followed."""

    def __init__(self, status: int, url: str, location: str | None) -> None:
        where = redact_url(str(httpx.URL(url).join(location))) if location else "nowhere (no Location header)"
        super().__init__(f"the server answered {redact_url(url)} with HTTP {status}, a redirect to {where}; "
                         "redirects are not followed: use the URL it points to as --base-url")
        self.status, self.location = status, where


def _check_head(response: httpx.Response, request: httpx.Request, max_bytes: int) -> None:
    if 300 <= response.status_code < 400:
        raise RedirectRefused(response.status_code, str(request.url), response.headers.get("location"))
    announced = response.headers.get("content-length")
    if announced is not None and announced.strip().isdigit() and int(announced) > max_bytes:
        raise BadReply("too_large", f"the server announced {int(announced)} bytes, more than the reply cap "
                                    f"of {max_bytes} bytes (max_reply_bytes)")


class _Checker:
    """Counts the bytes of one body and checks that they are UTF-8, chunk by chunk."""

    def __init__(self, response: httpx.Response, max_bytes: int) -> None:
        self.max_bytes, self.seen = max_bytes, 0
        plain = response.headers.get("content-encoding", "identity").strip().lower() in ("", "identity")
        # a successful answer's text must be UTF-8; an error page is read by the SDK for its message only
        self.decoder = codecs.getincrementaldecoder("utf-8")() if plain and response.is_success else None

    def feed(self, chunk: bytes, final: bool = False) -> None:
        self.seen += len(chunk)
        if self.seen > self.max_bytes:
            raise BadReply("too_large", f"more than the reply cap of {self.max_bytes} bytes (max_reply_bytes)")
        if self.decoder is not None:
            try:
                self.decoder.decode(chunk, final)
            except UnicodeDecodeError as exc:
                where = self.seen - len(chunk) + exc.start
                raise BadReply("invalid_utf8", f"the reply is not valid UTF-8 (byte {where})") from None


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, checker: _Checker) -> None:
        self.inner, self.checker = inner, checker

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.checker.feed(chunk)
            yield chunk
        self.checker.feed(b"", final=True)

    def close(self) -> None:
        self.inner.close()


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, checker: _Checker) -> None:
        self.inner, self.checker = inner, checker

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.checker.feed(chunk)
            yield chunk
        self.checker.feed(b"", final=True)

    async def aclose(self) -> None:
        await self.inner.aclose()


def guarded_client(max_reply_bytes: int, timeout: float) -> httpx.Client:
    """A sync httpx client with the policy of the module docstring (for the SDK's sync client)."""

    def check(response: httpx.Response) -> None:
        _check_head(response, response.request, max_reply_bytes)
        response.stream = _SyncBody(response.stream, _Checker(response, max_reply_bytes))  # type: ignore[arg-type]

    return httpx.Client(timeout=timeout, follow_redirects=False, headers=CLIENT_HEADERS,
                        event_hooks={"response": [check]})


def guarded_async_client(max_reply_bytes: int, timeout: float) -> httpx.AsyncClient:
    """An async httpx client with the policy of the module docstring (every model call, the preflight)."""

    async def check(response: httpx.Response) -> None:
        _check_head(response, response.request, max_reply_bytes)
        response.stream = _AsyncBody(response.stream, _Checker(response, max_reply_bytes))  # type: ignore[arg-type]

    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, headers=CLIENT_HEADERS,
                             event_hooks={"response": [check]})
