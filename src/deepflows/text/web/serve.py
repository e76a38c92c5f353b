"""`deepflows serve`: Talk to Books and Semantris over a sentence index, as a local web app.

    deepflows serve --index books.index [--model DIR] [--host 127.0.0.1] [--port 8000]

The index and the encoder are checked before the server starts: a directory that is not an index, or an index
built by another encoder than the one served, is refused in one line (exit 2). `--check` stops there, for scripts.
The server binds to 127.0.0.1 (this machine only) unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys

from deepflows.arguments import positive_int
from deepflows.errors import UserError
from deepflows.text.web.limits import Limits

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, metavar="DIR", help="a sentence index (deepflows text-index)")
    p.add_argument("--model", metavar="DIR", help="the encoder that built the index (default: pretrained MiniLM)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=port, default=8000)
    p.add_argument("--check", action="store_true", help="check the index and the encoder, then exit without serving")
    p.add_argument("--max-body-bytes", type=positive_int, default=Limits.max_body_bytes)
    p.add_argument("--max-pending", type=positive_int, default=Limits.max_pending,
                   help="requests that may wait for the encoder; more get HTTP 503")  # fmt: skip


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, not {text}")
    return value


def run(args: argparse.Namespace) -> None:
    from deepflows.text.web.app import create_app

    limits = Limits(max_body_bytes=args.max_body_bytes, max_pending=args.max_pending)
    app = create_app(args.index, args.model, limits)
    if args.check:
        print(f"{args.index}: ok", file=sys.stderr)
        return
    import uvicorn

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this machine on port %d can use the server", args.host,
                    args.port)  # fmt: skip
    log.info("serving %s on http://%s:%d/", args.index, args.host, args.port)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    except SystemExit as err:  # uvicorn exits 1 when it cannot bind (the port taken): its own log says why
        raise UserError(f"cannot listen on {args.host}:{args.port} (see the lines above)") from err
