"""The dev server against foreign pages: Host/Origin checks, dotfiles, headers, bad /stats ids."""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from devserver.app import ROOT, make_app
from devserver.security import normalise_origin

from .aio import run
from .test_server import with_client

EVIL = "http://evil.example"
PAGES = ("index.html", "minimal.html", "lab/naive.html", "lab/wss-reset-crash.html")


def port_of(client: TestClient) -> int:
    return client.server.port


async def ws_status(client: TestClient, path: str = "/ws?scenario=chat&turns=1&tokens=1", **kw) -> int:
    """The status of a WebSocket upgrade: 101 if it was accepted, else the HTTP status."""
    try:
        async with client.ws_connect(path, protocols=("pyclient.v1",), **kw):
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


def test_foreign_origins_are_refused_on_ws_and_stats() -> None:
    async def t(client: TestClient) -> None:
        port = port_of(client)
        assert await ws_status(client, origin=EVIL) == 403
        assert await ws_status(client, origin=f"http://127.0.0.1:{port + 1}") == 403
        assert await ws_status(client, origin="null") == 403
        r = await client.get("/stats", headers={"Origin": EVIL})
        assert r.status == 403 and r.content_type == "text/plain"
        assert "Origin 'http://evil.example'" in await r.text()
        # This server's own pages, under any of its names, and clients that send no Origin.
        for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"):
            assert await ws_status(client, origin=own) == 101, own
            assert (await client.get("/stats", headers={"Origin": own})).status == 200
        assert await ws_status(client) == 101
        assert (await client.get("/stats")).status == 200

    with_client(t)


def test_foreign_host_is_refused_on_every_route() -> None:
    """DNS rebinding: evil.example resolves to 127.0.0.1, the browser sends Host: evil.example."""

    async def t(client: TestClient) -> None:
        port = port_of(client)
        for path in ("/", "/main.py", "/stats", "/pyclient.zip", "/vendor/pyodide/pyodide.mjs"):
            for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", ""):
                r = await client.get(path, headers={"Host": host})
                assert r.status == 403, (path, host)
                assert r.content_type == "text/plain" and "DNS rebinding" in await r.text()
        assert await ws_status(client, headers={"Host": f"evil.example:{port}"}) == 403
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
            assert (await client.get("/", headers={"Host": host})).status == 200, host

    with_client(t)


def test_allowed_origins_and_host_are_configurable() -> None:
    async def t(client: TestClient) -> None:
        port = port_of(client)
        assert await ws_status(client, origin="http://localhost:7860") == 101
        assert await ws_status(client, origin="https://bot.example") == 101
        assert await ws_status(client, origin=EVIL) == 403
        assert (await client.get("/", headers={"Host": f"devbox.local:{port}"})).status == 200
        assert (
            await ws_status(client, headers={"Host": f"devbox.local:{port}"}, origin=f"http://devbox.local:{port}")
            == 101
        )

    with_client(t, host="devbox.local", allowed_origins=["http://localhost:7860/", "HTTPS://bot.example"])


def test_allow_origin_must_be_an_origin() -> None:
    assert normalise_origin("http://LOCALHOST:7860/") == "http://localhost:7860"
    for bad in ("localhost:7860", "http://a/b", "ftp://x", "http://user@x", ""):
        with pytest.raises(ValueError):
            normalise_origin(bad)
    import serve

    with pytest.raises(SystemExit) as exc:
        serve.main(["--allow-origin", "localhost:7860"])
    assert exc.value.code == 2


def test_dotfiles_are_not_served(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>x</title>")
    (tmp_path / ".env").write_text("SECRET=1")
    (tmp_path / "sub" / ".git").mkdir(parents=True)
    (tmp_path / "sub" / ".git" / "config").write_text("[core]")
    (tmp_path / "sub" / "ok.txt").write_text("fine")

    async def t(client: TestClient) -> None:
        for path in ("/.env", "/sub/.git/config", "/%2eenv", "/sub/%2Egit/config", "/sub/../.env"):
            r = await client.get(path)
            assert r.status == 404, path
            assert r.content_type == "text/plain" and "SECRET" not in await r.text()
        assert await (await client.get("/sub/ok.txt")).text() == "fine"
        assert (await client.get("/")).status == 200

    with_client(t, web_root=tmp_path)


class _InlineScripts(HTMLParser):
    """Inline JavaScript of a page, the way a browser sees it (an independent parser)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.scripts: list[str] = []
        self._in: bool = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._in = tag == "script" and "src" not in a and (a.get("type") or "module") in ("module", "text/javascript")
        if self._in:
            self.scripts.append("")

    def handle_data(self, data: str) -> None:
        if self._in:
            self.scripts[-1] += data

    def handle_endtag(self, tag: str) -> None:
        self._in = False


def directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}


def test_headers_and_a_csp_the_pages_pass() -> None:
    async def t(client: TestClient) -> None:
        port = port_of(client)
        inline = 0
        for page in PAGES:
            r = await client.get("/" + page)
            assert r.status == 200, page
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            csp = directives(r.headers["Content-Security-Policy"])
            assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
            assert csp["base-uri"] == ["'self'"]
            assert csp["connect-src"] == ["'self'", f"ws://127.0.0.1:{port}", "https://api.openai.com"]
            assert "'unsafe-inline'" not in csp["script-src"] and "'wasm-unsafe-eval'" in csp["script-src"]
            parser = _InlineScripts()
            parser.feed((ROOT / "web" / page).read_text())
            inline += len(parser.scripts)
            for script in parser.scripts:  # every inline script of the page is allowed by its hash
                digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
                assert f"'sha256-{digest}'" in csp["script-src"], page
        assert inline >= 1  # web/lab/naive.html
        r = await client.get("/", headers={"Host": f"localhost:{port}"})  # ws:// follows the page's own origin
        assert f"ws://localhost:{port}" in directives(r.headers["Content-Security-Policy"])["connect-src"]

    with_client(t, extra_connect_src=["https://api.openai.com"])


def test_error_responses_are_plain_text() -> None:
    async def boom(request: web.Request) -> web.Response:  # a handler with a bug
        raise RuntimeError("bug")

    async def t() -> None:
        app = make_app()
        app.router.add_get("/boom", boom)
        async with TestClient(TestServer(app)) as client:
            for method, path, status in (("GET", "/nope.html", 404), ("POST", "/", 405), ("GET", "/boom", 500)):
                r = await client.request(method, path, headers={"Accept": "text/html"})
                assert r.status == status, path
                assert r.content_type == "text/plain", (path, r.content_type)
                assert "<html" not in (await r.text()).lower()
                assert r.headers["X-Content-Type-Options"] == "nosniff"

    run(t())


def test_bad_stats_ids_are_400_not_500() -> None:
    async def t(client: TestClient) -> None:
        for bad in ("%C2%B2", "1" * 5000, "abc", "-1", "1.0", "", "٣"):
            r = await client.get(f"/stats?id={bad}")
            assert r.status == 400, bad
            assert r.content_type == "text/plain" and "not a connection id" in await r.text()
        r = await client.get("/stats?id=99999")
        assert r.status == 404 and r.content_type == "text/plain"
        r = await client.get("/stats?id=" + "9" * 12)
        assert r.status == 404

    with_client(t)
