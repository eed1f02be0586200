"""The slide lab's web app (Starlette): the page, deep-zoom tiles, overlays, all answered by
service.SlideService.

Routes (every slide and overlay is addressed by its id in the catalog, never by a file path, so
no URL can reach a file the viewer was not given; `../`, absolute paths and ids that do not
exist answer 404, as do levels, columns and rows outside the pyramid):

    GET /                                                  the page (static/index.html)
    GET /static/...                                        its script, style and OpenSeadragon
    GET /api/slides                                        the list: ids, scores, errors, problems
    GET /api/slides/{id}                                   metadata, DZI descriptor, overlays
    GET /api/slides/{id}/thumbnail.jpeg
    GET /api/slides/{id}/tiles/{level}/{col}_{row}.jpeg    deep-zoom tiles (JPEG)
    GET /api/slides/{id}/overlays/{oid}.png?cmap=&threshold=    raster overlays, coloured
    GET /api/slides/{id}/overlays/{oid}.json               vector overlays (features.py's form)
    GET /api/stats                                         cache sizes and hits

With a token, every request must carry it: `?token=` (the page's first URL; it then sets a
same-site cookie), the cookie, or `Authorization: Bearer`.
"""

from __future__ import annotations

import hmac
import json
import math
from pathlib import Path
from urllib.parse import parse_qs

from histoflow.core.optional import require
from histoflow.viewer.service import NotFound, SlideService

STATIC = Path(__file__).parent / "static"
COOKIE = "histoflow_view_token"


def clean(obj):
    """JSON-safe: NaN and infinities (a slide.json may hold them) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def create_app(service: SlideService, token: str | None = None):
    """The ASGI app over a SlideService (`view()` builds both from paths)."""
    require("starlette", extra="view")
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import FileResponse, PlainTextResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    def json_response(obj, status: int = 200) -> Response:
        return Response(json.dumps(clean(obj), separators=(",", ":")), status, media_type="application/json")

    def not_found(exc: Exception) -> Response:
        return PlainTextResponse(str(exc), 404)

    async def call(fn, *args):
        try:
            return await run_in_threadpool(fn, *args)
        except NotFound as exc:
            raise _Answer(not_found(exc)) from None

    async def index(request):
        response = FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
        if token and request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    async def slides(request):
        return json_response(await call(service.slides))

    async def slide(request):
        return json_response(await call(service.slide_info, request.path_params["slide"]))

    async def thumbnail(request):
        data = await call(service.thumbnail, request.path_params["slide"])
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=600"})

    async def tile(request):
        p = request.path_params
        args = (p["slide"], p["level"], p["col"], p["row"])
        data = service.cached_tile(*args)  # a hit never leaves the event loop
        if data is None:
            data = await call(service.tile, *args)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=600"})

    async def overlay_png(request):
        q = request.query_params
        try:
            threshold = float(q["threshold"]) if q.get("threshold") not in (None, "") else None
        except ValueError:
            return PlainTextResponse(f"threshold must be a number, got {q.get('threshold')!r}", 404)
        if threshold is not None and not math.isfinite(threshold):
            threshold = None
        data = await call(
            service.overlay_png,
            request.path_params["slide"],
            request.path_params["overlay"],
            q.get("cmap", "jet"),
            threshold,
        )
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    async def overlay_json(request):
        data = await call(service.overlay_features, request.path_params["slide"], request.path_params["overlay"])
        return json_response(data)

    async def stats(request):
        return json_response(service.stats())

    routes = [
        Route("/", index),
        Route("/api/slides", slides),
        Route("/api/stats", stats),
        Route("/api/slides/{slide}", slide),
        Route("/api/slides/{slide}/thumbnail.jpeg", thumbnail),
        Route("/api/slides/{slide}/tiles/{level:int}/{col:int}_{row:int}.jpeg", tile),
        Route("/api/slides/{slide}/overlays/{overlay}.png", overlay_png),
        Route("/api/slides/{slide}/overlays/{overlay}.json", overlay_json),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={_Answer: lambda request, exc: exc.response})
    app.state.service = service
    return TokenGate(app, token) if token else app


class _Answer(Exception):
    """A ready response raised from inside a route (a NotFound turned into a 404)."""

    def __init__(self, response):
        self.response = response


class TokenGate:
    """ASGI middleware: requests without the token answer 403 (cheap: no request object built)."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()
        self.state = app.state

    def _ok(self, scope) -> bool:
        given: list[bytes] = []
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.startswith(b"Bearer "):
                given.append(value[7:])
            elif name == b"cookie":
                for part in value.split(b";"):
                    k, _, v = part.strip().partition(b"=")
                    if k == COOKIE.encode():
                        given.append(v)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given += [t.encode() for t in query.get("token", [])]
        return any(hmac.compare_digest(g, self.token) for g in given)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self._ok(scope):
            body = b"histoflow view: this server needs its token (open the URL it printed, with ?token=...)"
            await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
