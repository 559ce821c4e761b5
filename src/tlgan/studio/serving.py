"""HTTP plumbing of the studio (a body-size limit, readable validation errors) and serving it
on a socket (the CLI, tests, benchmarks, notebooks)."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tlgan.errors import TlganError

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Requests with larger bodies are refused with 413 before they are read."""


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, before the app reads them.

    A declared Content-Length is checked up front; a body without one (chunked) is read
    here up to the limit and handed on, so no endpoint ever holds more than the limit.
    """

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_error(send, 400, f"Content-Length header {length[:32]!r} is not a number")
                return
            if declared > self.max_bytes:
                await _send_error(send, 413, self._too_large(declared))
                return
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_error(send, 413, self._too_large(size, at_least=True))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, size: int, at_least: bool = False) -> str:
        return (
            f"request body of {'more than ' if at_least else ''}{size:,} bytes is larger than the "
            f"{self.max_bytes:,}-byte limit; send a smaller image (a few hundred kB is plenty: faces are "
            f"scaled to a few dozen pixels)"
        )


async def _send_error(send, status: int, detail: str) -> None:
    body = JSONResponse({"detail": detail}, status_code=status).body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def describe_validation_errors(errors: Sequence[dict]) -> str:
    """Pydantic's error list -> one sentence per problem, naming the field and the value."""
    parts = []
    for err in list(errors)[:5]:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        kind = err.get("type", "")
        if kind == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "malformed")
            parts.append(
                f"the request body is not valid JSON ({reason}); send a JSON object such as "
                f'{{"seed": 7, "amounts": {{"Smiling": 1.5}}, "locks": ["Male"]}}'
            )
            continue
        where = ".".join(loc) or "request body"
        got = "" if kind == "missing" or "input" not in err else f" (got {_short(err['input'])})"
        parts.append(f"{where}: {err.get('msg', 'invalid')}{got}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(parts) + "; see /docs for the request format"


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one. TlganError if it cannot bind."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise TlganError(
            f"cannot resolve host {host!r} ({exc.strerror}); use an address such as 127.0.0.1"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise TlganError(
                f"port {port} on {host} is already in use; pick another with --port "
                f"(or --port 0 for any free one)"
            ) from None
        raise TlganError(
            f"cannot listen on {host}:{port} ({exc.strerror}); check --host and --port"
        ) from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    """The http:// address a browser on this machine can open for a socket from :func:`bind_socket`."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


class ServerThread:
    """Run an app under uvicorn in a background thread (tests, benchmarks, notebooks).

    >>> with ServerThread(app) as server:
    ...     urllib.request.urlopen(server.url + "api/attributes")
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 20.0):
        import uvicorn

        self.sock = bind_socket(host, port)
        self.url = url_of(self.sock)
        self.port = int(self.sock.getsockname()[1])
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="tlgan-studio", daemon=True
        )
        self.start_timeout = start_timeout

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise TlganError(f"the studio server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self.sock.close()

    def __exit__(self, *exc) -> None:
        self.close()
