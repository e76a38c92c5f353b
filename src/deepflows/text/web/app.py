"""The web app: a JSON API over one sentence index, one sentence encoder and one lexicon, and the pages on top.

    POST /api/search          {query, k?, book_id?}       -> {hits: [{text, paragraph_text, sentence_start, ...}]}
    POST /api/semantris/round {mode: arcade|blocks, seed?, n?, avoid?} -> {mode, seed, items}
    POST /api/semantris/rank  {clue, words}               -> {clue, ranking: [{word, score}]} best first
    GET  /api/health, /api/books

Every error is JSON `{"error": "one line"}` with a 4xx status (413 too large, 422 bad field, 404, 503 busy), and an
unexpected one a 500 with no traceback for the client (it is logged here). Pages and their scripts are read from the
package once, at start-up, and served from memory by name: no request parameter ever reaches the file system.
"""

import asyncio
import logging
import secrets
from contextlib import asynccontextmanager
from importlib import resources
from string import Template
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException

from deepflows.errors import UserError
from deepflows.text.semantris import InvalidClue
from deepflows.text.web.limits import BodyLimit, Limits
from deepflows.text.web.worker import Busy, EncoderWorker

log = logging.getLogger(__name__)

# route -> (title, the page's part in pages/, its script in static/, the Semantris mode)
PAGES = {"/": ("Talk to Books and Semantris", "index.html", "index.js", ""),
         "/books": ("Talk to Books", "books.html", "books.js", ""),
         "/arcade": ("Semantris Arcade", "semantris.html", "semantris.js", "arcade"),
         "/blocks": ("Semantris Blocks", "semantris.html", "semantris.js", "blocks")}  # fmt: skip
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8"}  # fmt: skip
# The pages load nothing from elsewhere and run no inline script.
SECURITY_HEADERS = {"content-security-policy": "default-src 'self'; object-src 'none'; frame-ancestors 'none'",
                    "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}  # fmt: skip


def create_app(index_dir, model=None, limits: Limits = Limits()) -> FastAPI:
    """The app for the index at `index_dir`, searched with the encoder `model` (None: the pretrained one).

    UserError when the directory is not an index, or when its vectors come from another encoder than `model`.
    """
    from deepflows.text.encoder import load_encoder
    from deepflows.text.index import SentenceIndex
    from deepflows.text.semantris import Lexicon, rank_words

    index = SentenceIndex.open(index_dir)
    encoder = load_encoder(model)
    check_same_encoder(index, encoder, index_dir)
    return build_app(index, encoder, Lexicon.load(), rank_words, limits)


def check_same_encoder(index, encoder, index_dir) -> None:
    """Query vectors only compare with sentence vectors made by the same weights."""
    if index.encoder_fingerprint != encoder.fingerprint:
        raise UserError(f"{index_dir}: index built by encoder {index.encoder_name} "
                        f"({index.encoder_fingerprint[:12]}), not by the one served, {encoder.name} "
                        f"({encoder.fingerprint[:12]}): rebuild the index with it, or serve the index's encoder "
                        f"with --model")  # fmt: skip


def build_app(index, encoder, lexicon, rank_words, limits: Limits = Limits()) -> FastAPI:
    """The app over already opened parts; `rank_words(encoder, clue, words)` ranks a Semantris screen."""
    books = index.books()
    book_ids = {book["book_id"] for book in books}
    assets = _read_assets()
    pages = _render_pages()
    worker = None

    @asynccontextmanager
    async def lifespan(app):
        nonlocal worker
        worker = EncoderWorker(index, encoder, limits.max_pending, limits.max_batch)
        yield
        worker.close()

    app = FastAPI(title="deepflows: Talk to Books and Semantris", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    _add_error_handlers(app)

    Query = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=limits.max_query_chars)]
    Word = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=limits.max_word_chars)]

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class Search(Strict):
        query: Query
        k: Annotated[int, Field(ge=1, le=limits.max_k)] = 10
        book_id: Annotated[str, Field(max_length=200)] | None = None

    class Round(Strict):
        mode: Literal["arcade", "blocks"]
        seed: Annotated[int, Field(ge=0, lt=2**32)] | None = None
        n: Annotated[int, Field(ge=1, le=limits.max_words)] = 20
        avoid: Annotated[list[Word], Field(max_length=limits.max_words)] = []  # on screen already

    class Rank(Strict):
        clue: Word
        words: Annotated[list[Word], Field(min_length=1, max_length=limits.max_words)]

    async def on_worker(future):
        return await asyncio.wrap_future(future)

    @app.get("/api/health")
    async def health():
        return {"status": "ok", "encoder": encoder.name, "encoder_fingerprint": encoder.fingerprint,
                "sentences": len(index), "books": len(books)}  # fmt: skip

    @app.get("/api/books")
    async def list_books():
        return {"books": books}

    @app.post("/api/search")
    async def search(body: Search):
        if body.book_id is not None and body.book_id not in book_ids:
            raise HTTPException(404, f"no book {body.book_id!r} in this index")
        hits = await on_worker(worker.search(body.query, body.k, body.book_id))
        return {"query": body.query, "k": body.k, "book_id": body.book_id, "hits": hits}

    @app.post("/api/semantris/round")
    async def semantris_round(body: Round):
        seed = secrets.randbits(32) if body.seed is None else body.seed
        items = await on_worker(worker.call(draw, body.mode, seed, body.n, body.avoid))
        return {"mode": body.mode, "seed": seed, "items": list(items)}

    def draw(mode: str, seed: int, n: int, avoid: list[str]) -> list[str]:
        pick = lexicon.arcade_words if mode == "arcade" else lexicon.blocks_phrases
        try:
            return pick(np.random.default_rng(seed), n, avoid)
        except ValueError as err:  # the pool cannot give n words that collide with none of `avoid`
            raise HTTPException(422, str(err)) from None

    def play(clue: str, words: list[str]) -> tuple[str, list]:
        try:  # the game's rules: not a word on screen, nor a form or a compound of one
            clue = lexicon.check_clue(clue, words)
        except InvalidClue as err:  # its message is for the player
            raise HTTPException(422, str(err)) from None
        return clue, rank_words(encoder, clue, words)

    @app.post("/api/semantris/rank")
    async def semantris_rank(body: Rank):
        clue, ranking = await on_worker(worker.call(play, body.clue, body.words))
        return {"clue": clue, "ranking": [{"word": word, "score": float(score)} for word, score in ranking]}

    def page(route: str):
        async def serve_page():
            return _asset_response(pages, route, ".html")

        return serve_page

    for route in PAGES:
        app.api_route(route, methods=["GET", "HEAD"], include_in_schema=False)(page(route))

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in assets:
            raise HTTPException(404, "no such page")
        return _asset_response(assets, name, name[name.rindex("."):])

    return app


def _read_assets() -> dict[str, bytes]:
    folder = resources.files("deepflows.text.web") / "static"
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.name.endswith(tuple(MEDIA_TYPES))}


def _render_pages() -> dict[str, bytes]:
    """route -> the page: its part of pages/ inside the one layout (head, navigation, scripts)."""
    folder = resources.files("deepflows.text.web") / "pages"
    layout = Template((folder / "layout.html").read_text())
    return {route: layout.substitute(title=title, main=(folder / part).read_text(), script=script,
                                     mode=mode).encode()
            for route, (title, part, script, mode) in PAGES.items()}  # fmt: skip


def _asset_response(assets: dict[str, bytes], name: str, suffix: str) -> Response:
    return Response(assets[name], media_type=MEDIA_TYPES[suffix], headers=SECURITY_HEADERS)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return _error(err.status_code, str(err.detail) if err.status_code != 404 or err.detail != "Not Found"
                      else f"no such page: {request.url.path}")  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError):
        return _error(422, describe_validation_error(err.errors()))

    @app.exception_handler(Busy)
    async def busy(request: Request, err: Busy):
        return _error(503, str(err))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=err)
        return _error(500, "internal server error (logged on the server)")


def describe_validation_error(errors) -> str:
    """The first problem of a request body, in one line: `query: String should have at most 1000 characters`."""
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    return f"{where}: {first['msg']}" if where else first["msg"]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
