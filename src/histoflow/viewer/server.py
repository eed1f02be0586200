"""`view(paths)` (the app, for notebooks and `histoflow view`) and serving it with uvicorn.

Binds 127.0.0.1 unless a host is given: a slide is patient data, and a viewer on 0.0.0.0 shows
it to the whole network. Another host prints a warning; `token` then keeps strangers out.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from histoflow.core.errors import ConfigError
from histoflow.core.optional import require
from histoflow.viewer.app import create_app
from histoflow.viewer.catalog import discover
from histoflow.viewer.service import SlideService

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
M_ARENA_MAX = -8  # mallopt parameter number from glibc's malloc.h


def view(
    paths: str | Path | Iterable[str | Path],
    token: str | None = None,
    tile_cache_mb: float = 128,
    max_open_slides: int = 16,
    jpeg_quality: int = 85,
):
    """The slide lab as an ASGI app: slides, folders of slides and histoflow outputs.

        app = histoflow.view(["slide.svs", "preds/"])
        server = serve_in_thread(app)          # in a notebook; server.url, server.stop()
        uvicorn.run(app, port=8000)            # or any ASGI server

    `app.state.service` is the SlideService behind it (catalog, caches).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ConfigError("view: give at least one slide, folder of slides or output folder")
    if not 10 <= jpeg_quality <= 100:
        raise ConfigError(f"view: jpeg_quality must be in 10..100, got {jpeg_quality}")
    if tile_cache_mb < 0:
        raise ConfigError(f"view: tile_cache_mb must be >= 0, got {tile_cache_mb}")
    catalog = discover(paths)
    service = SlideService(
        catalog, tile_cache_mb=tile_cache_mb, max_open_slides=max_open_slides, jpeg_quality=jpeg_quality
    )
    return create_app(service, token=token)


def new_token() -> str:
    return secrets.token_urlsafe(16)


def url_of(host: str, port: int, token: str | None = None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def host_warning(host: str, token: str | None) -> str | None:
    """What to tell the user when the viewer listens beyond this machine (None on loopback)."""
    if host in LOOPBACK:
        return None
    who = "anyone who can reach this port" if host in ("0.0.0.0", "::") else f"anyone who can reach {host}"
    guard = "they need the token in the URL" if token else "no token is set (--token); anyone may look"
    return f"serving slides on {host}: {who} can open them; {guard}"


class BackgroundServer:
    """uvicorn on a thread: a notebook keeps its own event loop, tests keep their process."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        uvicorn = require("uvicorn", extra="view")
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.host = host
        self.port = port
        self._thread = threading.Thread(target=self.server.run, name="histoflow-view", daemon=True)

    def start(self, timeout_s: float = 20.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the viewer did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]  # port 0: the one the OS gave
        return self

    @property
    def url(self) -> str:
        return url_of(self.host, self.port)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
    """Serve `app` in the background; returns the running server (`.url`, `.stop()`)."""
    return BackgroundServer(app, host, port).start()


def check_port(host: str, port: int) -> int:
    """The port to serve on, checked free now (0: one the OS picks), so a busy port is one clear
    error instead of uvicorn's traceback after the banner."""
    import socket

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or --host"
            ) from None
        return sock.getsockname()[1]


def few_malloc_arenas(n: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process (True when applied).

    Every thread that decodes a tile gets its own arena by default (up to 8 per core), each
    keeping freed memory of its own: measured here, a server's resident memory settles ~70 MB
    higher and keeps creeping for thousands of requests. Two arenas are plenty for a viewer's
    few decoding threads. Only `serve` (the `histoflow view` process) does this; a notebook's
    process is left alone."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, n) == 1)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False


def serve(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `app` until interrupted (Ctrl-C), as `histoflow view` does."""
    uvicorn = require("uvicorn", extra="view")
    few_malloc_arenas()
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
