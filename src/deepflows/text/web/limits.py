"""What one request may ask of the server: body size, query and word lengths, result and word counts, queue."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.exceptions import HTTPException


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 16_384  # a long question is a few hundred bytes; 10,000 words are 60 kB
    max_query_chars: int = 1_000
    max_k: int = 50
    max_words: int = 40  # a Semantris screen holds fewer
    max_word_chars: int = 80  # a Blocks phrase or a clue
    max_pending: int = 64  # requests waiting for the encoder beyond this get 503
    max_batch: int = 32  # queries encoded in one forward pass


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413, whether declared (Content-Length) or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _send_json(send, 413, self._message(declared.decode("latin-1")))
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # FastAPI passes an HTTPException raised while reading the body on to the app's handler.
                raise HTTPException(413, self._message(f"over {self.max_bytes}"))
            return message

        return await self.app(scope, limited_receive, send)

    def _message(self, size: str) -> str:
        return f"request body too large ({size} bytes; the limit is {self.max_bytes} bytes)"


async def _send_json(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
