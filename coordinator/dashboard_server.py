"""Serve a run's dashboard from its run store, live while the run goes on.

The standard library's threading HTTP server is enough: two routes, each
rendered from the store on every request (so a reload shows new events),
bound to localhost by default, with every asset inlined (no CDN, no file
served from disk):

- ``/``: the overview (sites, contributions, shared model, history);
- ``/site/<site id>``: one site's samples, audit and contribution.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from .dashboard import overview_html, site_html
from .store import RunStore

log = logging.getLogger(__name__)


def make_server(
    store: RunStore, host: str = "127.0.0.1", port: int = 8050
) -> ThreadingHTTPServer:
    """An HTTP server for ``store``'s dashboard (``port=0``: any free port)."""

    class DashboardHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = urlsplit(self.path).path
            if path in ("/", "/index.html"):
                page: str | None = overview_html(store, live=True)
            elif path.startswith("/site/") and path.count("/") == 2:
                page = site_html(store, unquote(path.removeprefix("/site/")), live=True)
            else:
                page = None
            if page is None:
                self.send_error(HTTPStatus.NOT_FOUND, "no such page: see /")
                return
            body = page.encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            log.debug("dashboard: " + format, *args)

    return ThreadingHTTPServer((host, port), DashboardHandler)
