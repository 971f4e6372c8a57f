"""Pure ASGI middleware: security headers (and ``Cache-Control: no-store``) on every response, a JSON 500 for any
unexpected exception, and an early 413 for oversized upload bodies."""

from __future__ import annotations

import json
import logging

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No inline scripts or styles on our pages: injected markup could not run even if it got through.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'self'; "
            "form-action 'self'; frame-ancestors 'none'")


log = logging.getLogger(__name__)
HSTS = b"max-age=31536000; includeSubDomains"
INTERNAL_ERROR = json.dumps({"detail": "internal server error", "errors": []}).encode()


class SecurityHeaders:
    """Patient data must not stay in a browser's or proxy's cache: every response but static files is no-store.
    Catching here (inside Starlette's own error middleware) keeps the headers and the JSON shape on a 500."""

    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Swagger UI (/docs) starts itself with an inline script; every other page gets the strict policy.
        strict = scope["path"] != "/docs"
        static = scope["path"].startswith("/static/")
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if static or k.lower() != b"cache-control"]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                if self.hsts:
                    headers.append((b"strict-transport-security", HSTS))
                headers += [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"same-origin")]
                if strict:
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope["path"])
            if started:
                raise  # the response is half sent; nothing else can be said to the client
            await send_with_headers({"type": "http.response.start", "status": 500,
                                     "headers": [(b"content-type", b"application/json"),
                                                 (b"content-length", str(len(INTERNAL_ERROR)).encode())]})
            await send_with_headers({"type": "http.response.body", "body": INTERNAL_ERROR})


class BodyLimit:
    """Refuse a request body larger than ``max_bytes``: at once when its Content-Length says so, else as soon as
    the bytes received pass it (a chunked upload is stopped there, before more is spooled to disk)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"request body exceeds the limit of {self.max_bytes / 2**20:g} MB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            body = json.dumps({"detail": self._message(), "errors": []}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes an HTTPException from body parsing through to the one JSON error shape.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counting_receive, send)
