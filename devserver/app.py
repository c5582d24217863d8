"""The aiohttp application: demo page, pinned runtimes, the ``/ws`` simulator and ``/stats``."""

from __future__ import annotations

import asyncio
import io
import logging
import mimetypes
import socket
import time
import zipfile
from pathlib import Path

from aiohttp import web

from .scenarios import SCENARIOS, ParamError, Params
from .session import Session
from .stats import StatsRegistry

log = logging.getLogger("pyclient.devserver")

ROOT = Path(__file__).resolve().parent.parent
SUBPROTOCOL = "pyclient.v1"
SUBPROTOCOL_CREDIT = "pyclient.v1.credit"
DEFAULT_SNDBUF = 64 * 1024
TOOL_RESULT_TIMEOUT_S = 10.0
LINGER_S = 300.0  # after "done", how long the client has to close (it may still be draining)

STATS = web.AppKey("stats", StatsRegistry)
SNDBUF = web.AppKey("sndbuf", int)

mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("application/wasm", ".wasm")


class SetupError(RuntimeError):
    """The checkout is not ready to serve (e.g. npm packages missing)."""


def runtime_dirs(root: Path = ROOT) -> dict[str, Path]:
    dirs = {
        "/vendor/pyodide": root / "node_modules" / "pyodide",
        "/vendor/pyscript": root / "node_modules" / "@pyscript" / "core" / "dist",
    }
    missing = [str(p) for p in dirs.values() if not p.is_dir()]
    if missing:
        raise SetupError(f"missing {', '.join(missing)}: run `npm ci` in {root}")
    return dirs


def package_zip(root: Path = ROOT) -> bytes:
    """The ``pyclient`` package as a zip, unpacked by PyScript into the page's Python path."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((root / "pyclient").rglob("*.py")):
            zf.write(path, path.relative_to(root).as_posix())
    return buf.getvalue()


async def _isolation_headers(request: web.Request, response: web.StreamResponse) -> None:
    # Cross-origin isolation gives the page SharedArrayBuffer (the audio ring).
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-cache")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(ROOT / "web" / "index.html")


async def pyclient_zip(request: web.Request) -> web.Response:
    return web.Response(body=package_zip(), content_type="application/zip")


async def stats(request: web.Request) -> web.Response:
    registry = request.app[STATS]
    conn = request.query.get("id")
    if conn is not None:
        found = registry.get(int(conn)) if conn.isdigit() else None
        if found is None:
            raise web.HTTPNotFound(text=f"no connection {conn!r} among the recent ones")
        return web.json_response(found.as_dict())
    return web.json_response(registry.as_dict())


def _limit_send_buffer(request: web.Request, nbytes: int) -> None:
    """Keep the kernel's buffers small: a stalled reader stalls our sends quickly, and a stalled
    server (``upload``) backs the client's sends up quickly."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport else None
    if sock is not None and nbytes > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, nbytes)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, nbytes)
    if transport is not None:
        transport.set_write_buffer_limits(high=nbytes or DEFAULT_SNDBUF)


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    params = dict(request.query)
    scenario = params.get("scenario", "chat")
    credit_supported = params.get("credit", "1") != "0"
    protocols = (SUBPROTOCOL_CREDIT, SUBPROTOCOL) if credit_supported else (SUBPROTOCOL,)
    ws = web.WebSocketResponse(protocols=protocols, max_msg_size=4 * 1024 * 1024, heartbeat=None)
    await ws.prepare(request)
    _limit_send_buffer(request, request.app[SNDBUF])
    st = request.app[STATS].open(scenario, params, ws.ws_protocol)
    session = Session(ws, st, credit=ws.ws_protocol == SUBPROTOCOL_CREDIT, transport=request.transport)
    receiver = asyncio.create_task(session.receive_loop())
    try:
        run = SCENARIOS.get(scenario)
        await session.control(
            "hello",
            connection_id=st.id,
            scenario=scenario,
            protocol=1,
            credit=session.credit is not None,
        )
        try:
            session.drop_after = Params(params).num("drop_after", 0, 0, 10**9, int)
            if run is None:
                names = ", ".join(sorted(SCENARIOS))
                await session.control(
                    "error", code="unknown_scenario", message=f"no scenario {scenario!r}; try {names}"
                )
            else:
                await run(session, Params(params))
                if not await session.wait_tool_results(TOOL_RESULT_TIMEOUT_S):
                    st.errors.append("some tool results never arrived")
        except ParamError as exc:
            await session.control("error", code="bad_params", message=str(exc))
        await session.control("done", connection_id=st.id)
        # The client closes after reading "done"; closing first could lose frames it has not
        # read yet (seen with Chromium's WebSocketStream).
        try:
            await asyncio.wait_for(session.closed.wait(), LINGER_S)
        except TimeoutError:
            st.errors.append(f"client did not close within {LINGER_S:.0f} s of 'done'")
    except (ConnectionResetError, ConnectionError) as exc:
        st.errors.append(f"connection lost: {exc}")
    except Exception as exc:  # a bug in a scenario: record it and close
        log.exception("scenario %s failed", scenario)
        st.errors.append(f"server bug: {exc!r}")
    finally:
        st.sample()
        if not ws.closed:
            await ws.close()
        try:
            await asyncio.wait_for(receiver, 5)
        except TimeoutError:
            receiver.cancel()
        st.ended = time.time()
        st.close_code = ws.close_code
        st.sample()
    return ws


def make_app(sndbuf: int = DEFAULT_SNDBUF) -> web.Application:
    app = web.Application()
    app[STATS] = StatsRegistry()
    app[SNDBUF] = sndbuf
    app.on_response_prepare.append(_isolation_headers)
    app.router.add_get("/", index)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/stats", stats)
    app.router.add_get("/pyclient.zip", pyclient_zip)
    for prefix, path in runtime_dirs().items():
        app.router.add_static(prefix, path)
    app.router.add_static("/pyclient", ROOT / "pyclient")
    app.router.add_static("/", ROOT / "web")
    return app
