"""Who may talk to the dev server, and the headers every response carries.

The dev server runs on developers' machines, where any page they visit can reach it. So:

* **Host** (every route): the request must name this server: ``127.0.0.1``, ``localhost``,
  ``[::1]``, the ``--host`` value or the address the connection arrived on, each with the
  port it arrived on. Anything else is DNS rebinding (``evil.example`` resolving to
  127.0.0.1) and gets 403: the HTML page itself is what such an attacker would load.
* **Origin** (``/ws`` and ``/stats``): browsers send it with WebSocket upgrades and cross-origin
  fetches. It must be this server's own origin (``http://`` + one of the names above) or one
  configured with ``allowed_origins`` (``serve.py --allow-origin URL``); else 403. Requests
  without an Origin (curl, urllib, the tests) are allowed once the Host is fine.
* **Dotfiles**: any path segment starting with ``.`` is 404, whatever the static root.
* **Headers**: ``content_security_policy`` (one function; each source says why it is there),
  ``nosniff``, ``no-referrer``, cross-origin isolation (the audio ring's SharedArrayBuffer).
  Error responses are text/plain.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger("pyclient.devserver")

LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
ORIGIN_CHECKED_PATHS = ("/ws", "/stats")
JS_SCRIPT_TYPES = ("", "module", "text/javascript", "application/javascript", "text/ecmascript")
_SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
_TYPE_ATTR = re.compile(r"""\btype\s*=\s*["']?([^"'\s>]*)""", re.IGNORECASE)
_SRC_ATTR = re.compile(r"\bsrc\s*=", re.IGNORECASE)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _host_name(host: str) -> str:
    """A host as it appears in a Host header: IPv6 addresses in brackets, lower case."""
    host = host.strip().lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def normalise_origin(url: str) -> str:
    """``scheme://host[:port]`` in lower case, as browsers send it; ValueError if it is not one."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"not an origin (scheme://host[:port]): {url!r}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"not an origin (scheme://host[:port]): {url!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


def inline_script_hashes(pages: Iterable[Path]) -> tuple[str, ...]:
    """CSP hash sources (``'sha256-…'``) of the inline JavaScript in our own pages.

    ``<script src=…>`` and non-JavaScript types (PyScript's ``type="py"``) are not hashed: the
    first is covered by ``'self'``, the second is never run by the browser.
    """
    hashes: list[str] = []
    for page in sorted(pages):
        html = page.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\r", "\n")
        for attrs, body in _SCRIPT.findall(html):
            kind = _TYPE_ATTR.search(attrs)
            if _SRC_ATTR.search(attrs) or (kind and kind.group(1).lower() not in JS_SCRIPT_TYPES):
                continue
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            if (source := f"'sha256-{digest}'") not in hashes:
                hashes.append(source)
    return tuple(hashes)


def content_security_policy(
    ws_self: str, script_hashes: Iterable[str] = (), extra_connect_src: Iterable[str] = ()
) -> str:
    """The one Content-Security-Policy of every response (change it here and only here).

    ``ws_self`` is the ws:// form of the origin the page was loaded from.
    """
    directives = {
        "default-src": ["'self'"],
        "script-src": [
            "'self'",  # PyScript, Pyodide, our modules and worklets, all served from here
            "'wasm-unsafe-eval'",  # Pyodide compiles its WebAssembly in the page
            "'unsafe-eval'",  # Emscripten's EM_ASM/EM_JS glue and pyodide.code.run_js use eval; PyScript Function()
            "blob:",  # PyScript starts helper workers from Blob URLs
            *script_hashes,  # the inline <script> elements of our own pages (web/lab/naive.html), hashed at start
        ],
        "worker-src": ["'self'", "blob:"],  # PyScript's workers (Blob URLs)
        "style-src": ["'self'", "'unsafe-inline'"],  # PyScript and the editor inject <style>; pages set style=
        "img-src": ["'self'", "data:", "blob:"],  # data: the pages' empty favicon (<link rel=icon href="data:,">)
        "font-src": ["'self'", "data:"],
        "media-src": ["'self'", "blob:"],
        # Only this server: 'self', plus its ws:// form because older engines (CSP2) do not
        # map 'self' to ws:; providers' origins are added by configuration (extra_connect_src).
        "connect-src": ["'self'", ws_self, *extra_connect_src],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],  # no page may frame the demo (clickjacking)
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


@dataclass(frozen=True)
class AccessPolicy:
    """The Host/Origin rules and the response headers of one app."""

    bind_host: str = "127.0.0.1"
    allowed_origins: frozenset[str] = frozenset()
    extra_connect_src: tuple[str, ...] = ()
    script_hashes: tuple[str, ...] = field(default=())

    @classmethod
    def build(
        cls,
        bind_host: str = "127.0.0.1",
        allowed_origins: Iterable[str] = (),
        extra_connect_src: Iterable[str] = (),
        pages: Iterable[Path] = (),
    ) -> AccessPolicy:
        return cls(
            bind_host=bind_host,
            allowed_origins=frozenset(normalise_origin(o) for o in allowed_origins),
            extra_connect_src=tuple(extra_connect_src),
            script_hashes=inline_script_hashes(pages),
        )

    def own_hosts(self, request: web.Request) -> set[str]:
        """The Host header values that name this server, for the port the request came in on."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not sockname:
            return set()
        local_ip, port = sockname[0], sockname[1]
        names = {*LOCAL_NAMES, _host_name(local_ip)}
        if self.bind_host not in WILDCARD_HOSTS:
            names.add(_host_name(self.bind_host))
        hosts = {f"{name}:{port}" for name in names}
        if port == 80:
            hosts |= names
        return hosts

    def refusal(self, request: web.Request) -> str | None:
        """Why this request is refused (403), or None."""
        own = self.own_hosts(request)
        host = request.headers.get("Host", "").lower()
        if host not in own:
            return (
                f"403: Host {host[:100]!r} is not one of this server's names ({', '.join(sorted(own))}); "
                "a page on another name cannot use the dev server (DNS rebinding). "
                "Start serve.py with --host NAME to serve under another name."
            )
        origin = request.headers.get("Origin")
        if (
            origin is not None
            and request.path in ORIGIN_CHECKED_PATHS
            and origin.lower() not in {f"http://{h}" for h in own} | self.allowed_origins
        ):
            return (
                f"403: Origin {origin[:100]!r} is not allowed to use {request.path}: only this server's own "
                "pages are (start serve.py with --allow-origin URL to allow another)."
            )
        return None

    def headers(self, request: web.Request) -> dict[str, str]:
        ws_self = f"ws://{request.headers.get('Host', '')}"
        return {
            "Content-Security-Policy": content_security_policy(ws_self, self.script_hashes, self.extra_connect_src),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            # Cross-origin isolation gives the page SharedArrayBuffer (the audio ring).
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Embedder-Policy": "require-corp",
            "Cross-Origin-Resource-Policy": "same-origin",
        }


def has_dot_segment(path: str) -> bool:
    """True if any segment of the (decoded) path starts with '.': ``/.env``, ``/a/.git/x``."""
    return any(segment.startswith(".") for segment in path.split("/"))


def text_error(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", headers=headers)


def guard_middleware(policy: AccessPolicy) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Refuse foreign hosts/origins and dotfiles; turn every error into a text/plain response."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = policy.refusal(request)
        if refusal is not None:
            return text_error(403, refusal)
        if has_dot_segment(request.path):
            return text_error(404, "404: Not Found")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise  # redirects stay as they are
            keep = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
            return text_error(exc.status, exc.text or f"{exc.status}: {exc.reason}", keep)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return text_error(500, "500: Internal Server Error (a dev server bug; see its log)")

    return guard
