"""The aiohttp application: demo page, pinned runtimes, the ``/ws`` simulator, ``/stats``, the
emulated provider sockets (``/openai/...``, ``/gemini/...``) and the token endpoint ``/session``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import mimetypes
import re
import socket
import time
import weakref
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, web

from pyclient.frames import DEFAULT_MAX_PAYLOAD

from .bytecode import package_zip
from .emulation import EMULATION, EmulationContext, socket_handler
from .gemini_live import GeminiLiveSession, auth_tokens
from .openai_realtime import OpenAIRealtimeSession, client_secrets
from .resume import (
    DEFAULT_REPLAY_BYTES,
    DEFAULT_RESUME_WINDOW_S,
    RESUME_FAILED,
    RESUME_QUERY,
    ResumableSession,
    token_ok,
)
from .scenarios import SCENARIOS, ParamError, Params
from .security import AccessPolicy, Handler, guard_middleware, has_dot_segment, text_error
from .session import ClosedEarly, Session, close_first
from .stats import StatsRegistry
from .tokens import (
    RATE_LIMIT,
    TOKEN_SERVICE,
    ProviderConfig,
    RateLimiter,
    TokenService,
    TokenStore,
    redact_access_log,
    session_endpoint,
)

log = logging.getLogger("pyclient.devserver")

ROOT = Path(__file__).resolve().parent.parent
SUBPROTOCOL = "pyclient.v1"
SUBPROTOCOL_CREDIT = "pyclient.v1.credit"
DEFAULT_SNDBUF = 64 * 1024
# After the scenario, outstanding tool results are awaited while the client makes progress:
# until nothing has arrived for TOOL_RESULT_IDLE_S, and TOOL_RESULT_CAP_S in all.
TOOL_RESULT_IDLE_S = 10.0
TOOL_RESULT_CAP_S = 300.0
LINGER_S = 300.0  # after "done", how long the client has to close (it may still be draining)
MAX_PAYLOAD = DEFAULT_MAX_PAYLOAD  # the largest frame payload accepted from clients (hello: max_payload)
STATS_ID = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() accepts '²'
CLOSE_REASON_BYTES = 123  # RFC 6455: a close reason fits in a control frame


@dataclass(frozen=True)
class ServerConfig:
    sndbuf: int = DEFAULT_SNDBUF
    tool_result_idle_s: float = TOOL_RESULT_IDLE_S
    tool_result_cap_s: float = TOOL_RESULT_CAP_S
    max_payload: int = MAX_PAYLOAD


STATS = web.AppKey("stats", StatsRegistry)
CONFIG = web.AppKey("config", ServerConfig)
POLICY = web.AppKey("policy", AccessPolicy)
SESSIONS = web.AppKey("sessions", weakref.WeakSet)  # the connections open right now
RESUMABLE = web.AppKey("resumable", dict)  # resume token -> a /ws session that may resume
ENDED = web.AppKey("ended", dict)  # tokens of /ws sessions that ended here (bounded, ordered)
MAX_ENDED_TOKENS = 10_000
RUNNERS = web.AppKey("runners", set)  # the /ws sessions' scenario tasks (not tied to one socket)
WEB_ROOT = web.AppKey("web_root", Path)
TOKENS = web.AppKey("tokens", TokenStore)  # credentials the emulated providers minted
GEMINI_SOCKET = (
    "/gemini/ws/google.ai.generativelanguage.{version:v1alpha|v1beta}"
    ".GenerativeService.{method:BidiGenerateContent|BidiGenerateContentConstrained}"
)

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


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # CSP, nosniff, no-referrer and cross-origin isolation: devserver/security.py.
    response.headers.update(request.app[POLICY].headers(request))
    response.headers.setdefault("Cache-Control", "no-cache")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[WEB_ROOT] / "index.html")


def _locate(root: Path, relative: str) -> Path | None:
    """The regular file ``relative`` names under ``root``, or None (outside it, missing, a dotfile)."""
    if not relative or has_dot_segment(relative) or Path(relative).is_absolute():
        return None
    try:
        target = (root / relative).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return target if target.is_relative_to(root) and target.is_file() else None


def static_files(root: Path) -> Handler:
    """Serve the files under ``root``. Unlike ``add_static`` a miss is a text/plain 404 (aiohttp's
    FileResponse answers a missing file with an empty octet-stream body), and a path with a
    dot segment is never served. Symlinks out of ``root`` are not followed."""
    root = root.resolve()

    async def handle(request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        found = await asyncio.get_running_loop().run_in_executor(None, _locate, root, relative)
        if found is None:
            raise web.HTTPNotFound()
        return web.FileResponse(found)

    return handle


async def pyclient_zip(request: web.Request) -> web.Response:
    """The package with its bytecode (devserver/bytecode.py); ``?bytecode=0``: sources only."""
    bytecode = request.query.get("bytecode") != "0"
    body = await asyncio.get_running_loop().run_in_executor(None, functools.partial(package_zip, bytecode=bytecode))
    return web.Response(body=body, content_type="application/zip")


async def clock(request: web.Request) -> web.Response:
    """This server's wall clock in ms: a page measures its offset from the one that stamps
    text frames (``stamp=1``) with a few round trips."""
    return web.json_response({"ms": time.time() * 1000}, headers={"Cache-Control": "no-store"})


async def stats(request: web.Request) -> web.Response:
    registry = request.app[STATS]
    conn = request.query.get("id")
    if conn is not None:
        if not STATS_ID.fullmatch(conn):
            shown = conn[:20] + ("…" if len(conn) > 20 else "")
            return text_error(400, f"400: id={shown!r} is not a connection id (1 to 12 ASCII digits)")
        found = registry.get(int(conn))
        if found is None:
            return text_error(404, f"404: no connection {conn} among the recent ones")
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


async def _until_closed(session: Session, scenario: Coroutine[Any, Any, None]) -> None:
    """Run a scenario, cancelling it if the client goes away first (a scenario may be sleeping
    through a long pause; the connection must not look open meanwhile)."""
    task = asyncio.ensure_future(scenario)
    closed = asyncio.ensure_future(session.closed.wait())
    try:
        await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the handler itself was cancelled
        task.cancel()
        raise
    finally:
        closed.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):  # the client is gone either way
            await task
        raise ConnectionResetError("the client closed the connection during the scenario")
    task.result()  # the scenario's own exception, if any


def _close_reason(text: str) -> bytes:
    raw = text.encode()
    return raw if len(raw) <= CLOSE_REASON_BYTES else raw[: CLOSE_REASON_BYTES - 3] + b"..."


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    """``/ws``: a new pyclient.v1 session, or (``?resume=<token>&last_seq=<n>``) a lost
    session's next socket (devserver/resume.py)."""
    config = request.app[CONFIG]
    params = dict(request.query)
    credit_supported = params.get("credit", "1") != "0"
    protocols = (SUBPROTOCOL_CREDIT, SUBPROTOCOL) if credit_supported else (SUBPROTOCOL,)
    ws = web.WebSocketResponse(protocols=protocols, max_msg_size=4 * 1024 * 1024, heartbeat=None)
    # ``handshake_ms``: answer the upgrade that much later, as a far provider would (the
    # round trips of TCP, TLS and the upgrade): bench/startup.py's early socket hides it.
    await asyncio.sleep(Params(params).num("handshake_ms", 0, 0, 10_000) / 1000)
    await ws.prepare(request)
    _limit_send_buffer(request, config.sndbuf)
    credit = ws.ws_protocol == SUBPROTOCOL_CREDIT
    if "resume" in params:
        return await _resume(request, ws, params, credit)
    return await _start_session(request, ws, params, credit)


async def _start_session(
    request: web.Request,
    ws: web.WebSocketResponse,
    params: dict[str, str],
    credit: bool,
    restore: tuple[str, int | None] | None = None,
) -> web.WebSocketResponse:
    """Run a session's scenario on its first socket (or, ``restore``, on the first socket after
    a server restart: devserver/resume.py)."""
    config = request.app[CONFIG]
    params = {k: v for k, v in params.items() if k not in RESUME_QUERY}
    scenario = params.get("scenario", "chat")
    st = request.app[STATS].open(scenario, params, ws.ws_protocol)
    try:
        window = Params(params).num("resume_window", DEFAULT_RESUME_WINDOW_S, 0, 3600.0)
        replay = Params(params).num("replay_kb", DEFAULT_REPLAY_BYTES // 1024, 1, 256 * 1024, int) * 1024
    except ParamError:
        window, replay = 0.0, DEFAULT_REPLAY_BYTES  # reported by the session's run, as every bad parameter
    session = ResumableSession(
        st, params, max_payload=config.max_payload, replay_bytes=replay, resume_window=window, restore=restore
    )
    request.app[SESSIONS].add(session)
    link = session.attach(ws, request.transport, credit, start=0)
    if session.resumable:
        request.app[RESUMABLE][session.token] = session
    runner = asyncio.ensure_future(_run_session(request.app, session, scenario, params))
    request.app[RUNNERS].add(runner)
    runner.add_done_callback(request.app[RUNNERS].discard)
    await link.finished.wait()
    return ws


async def _resume(
    request: web.Request, ws: web.WebSocketResponse, params: dict[str, str], credit: bool
) -> web.WebSocketResponse:
    token = params["resume"]
    session = request.app[RESUMABLE].get(token)
    last = params.get("last_seq")
    last_seq = int(last) if last is not None and STATS_ID.fullmatch(last) else None
    ended = token in request.app[ENDED]
    if session is None and not ended and (last is None or last_seq is not None) and token_ok(token, params):
        # Signed by this server or one before a restart: the session goes on (restored).
        return await _start_session(request, ws, params, credit, restore=(token, last_seq))
    start = None
    if session is None or session.closed.is_set():
        why = "resume_failed: unknown or ended session"
    elif last is not None and last_seq is None:
        why = "resume_failed: last_seq is not a sequence number"
    else:
        start = session.replay.after(last_seq)
        why = f"resume_failed: the frames after {last_seq} are no longer buffered"
    if session is None or start is None:
        await ws.close(code=RESUME_FAILED, message=_close_reason(why))
        return ws
    link = session.attach(ws, request.transport, credit, start)
    session.resumes += 1
    session.post(session.seq.control("resumed", **session.resumed_fields()))
    await link.finished.wait()
    return ws


async def _run_session(app: web.Application, session: ResumableSession, scenario: str, params: dict[str, str]) -> None:
    """A /ws session's scenario, from ``hello`` to ``done`` and the client's close, across
    however many links carry it."""
    config = app[CONFIG]
    st = session.stats
    close_code, close_reason = WSCloseCode.OK, b""
    try:
        run = SCENARIOS.get(scenario)
        resume = {"resume_token": session.token, "resume_window_s": session.resume_window} if session.resumable else {}
        await session.control(
            "hello",
            connection_id=st.id,
            scenario=scenario,
            protocol=1,
            credit=session.link is not None and session.link.credit is not None,
            max_payload=session.max_payload,
            **resume,
        )
        try:
            session.drop_after = Params(params).num("drop_after", 0, 0, 10**9, int)
            session.drops = Params(params).num("drops", 1, 0, 1000, int)
            session.close_after = Params(params).num("close_after", 0, 0, 10**9, int)
            session.freeze_after = Params(params).num("freeze_after", 0, 0, 10**9, int)
            Params(params).num("resume_window", 0, 0, 3600.0)
            Params(params).num("replay_kb", 1, 1, 256 * 1024, int)
            if run is None:
                names = ", ".join(sorted(SCENARIOS))
                await session.control(
                    "error", code="unknown_scenario", message=f"no scenario {scenario!r}; try {names}"
                )
            else:
                await _until_closed(session, run(session, Params(params)))
                if not await session.wait_tool_results(config.tool_result_idle_s, config.tool_result_cap_s):
                    st.error(
                        f"{st.tool_results_missing_count} tool result(s) never arrived "
                        f"(waited {st.tool_wait_s:.1f} s; no progress for {config.tool_result_idle_s:g} s)"
                    )
        except ParamError as exc:
            await session.control("error", code="bad_params", message=str(exc))
        await session.control("done", connection_id=st.id)
        # The client closes after reading "done"; closing first could lose frames it has not
        # read yet (seen with Chromium's WebSocketStream).
        try:
            await asyncio.wait_for(session.closed.wait(), LINGER_S)
        except TimeoutError:
            st.error(f"client did not close within {LINGER_S:.0f} s of 'done'")
    except ClosedEarly as exc:
        st.error(str(exc))
        close_reason = b"close_after"
    except (ConnectionResetError, ConnectionError) as exc:
        why = session.end_reason
        st.error(f"connection lost: {exc}" + (f"; {why}" if why and why not in str(exc) else ""))
    except asyncio.CancelledError:  # the server is shutting down
        st.error("session cancelled: the server is shutting down")
        raise
    except Exception as exc:  # a bug in a scenario: record it and close with 1011, never 1000
        log.exception("scenario %s failed", scenario)
        st.error(f"server bug: {exc!r}")
        close_code = WSCloseCode.INTERNAL_ERROR
        close_reason = _close_reason(f"server bug: {type(exc).__name__} (see /stats?id={st.id})")
    finally:
        app[RESUMABLE].pop(session.token, None)
        app[ENDED][session.token] = None  # over: never restored
        while len(app[ENDED]) > MAX_ENDED_TOKENS:
            del app[ENDED][next(iter(app[ENDED]))]
        st.sample()
        session.resume_reading()  # a paused receive loop must see the close
        link = session.link
        closed_by_us = link is not None and not link.dead and not link.ws.closed
        try:
            if closed_by_us:
                await session.close_link(close_code, close_reason)
        finally:
            session.end("the session ended")
            session.release()
            st.ended = time.time()
            app[STATS].close(st)
            # The code of the last link's closing handshake: ours if we closed first, else the
            # client's; 1006 (abnormal closure) when it was lost without one (drop_after).
            if closed_by_us and link is not None and link.ws.close_code is not None:
                st.close_code = int(close_code)
            elif link is not None:
                st.close_code = link.close_code if link.close_code is not None else WSCloseCode.ABNORMAL_CLOSURE
            st.sample()


async def _stop_sessions(app: web.Application) -> None:
    """Shutting down: every /ws socket closes with 1012 (service restart: clients come back and
    resume, devserver/resume.py), then the scenarios stop; emulated provider sockets drop (1006:
    their clients resume too, with a handle or a new session)."""
    closing = []
    for session in list(app[RESUMABLE].values()):
        link = session.link
        if link is not None and not link.dead:
            link.closing = True
            closing.append(asyncio.ensure_future(close_first(link.ws, link.receiver, 1012, b"service restart")))
    if closing:
        await asyncio.wait(closing, timeout=5)
    for task in list(app[RUNNERS]):
        task.cancel()
    for session in list(app[SESSIONS]):  # the emulated providers' sockets: dropped, as in a crash
        if not isinstance(session, ResumableSession) and session.transport is not None:
            session.transport.abort()


def make_app(
    sndbuf: int = DEFAULT_SNDBUF,
    *,
    host: str = "127.0.0.1",
    allowed_origins: Iterable[str] = (),
    extra_connect_src: Iterable[str] = (),
    tool_result_idle_s: float = TOOL_RESULT_IDLE_S,
    tool_result_cap_s: float = TOOL_RESULT_CAP_S,
    web_root: Path = ROOT / "web",
    providers: ProviderConfig | None = None,
    emulated_provider_keys: Mapping[str, Iterable[str]] | None = None,
    session_rate_limit: tuple[int, float] = RATE_LIMIT,
) -> web.Application:
    """The dev server. ``host`` is the name it is served under (besides 127.0.0.1, localhost
    and [::1]); ``allowed_origins`` are other origins whose pages may use ``/ws`` and ``/stats``
    (``http://localhost:7860``); ``extra_connect_src`` are origins the pages may connect to
    (AI providers), added to the CSP. See devserver/security.py. ``web_root`` holds the pages.

    ``providers``: the long-lived keys ``POST /session`` mints real tokens with, and the
    providers' base URLs (None: no keys, tokens come from the emulation; serve.py reads the
    environment, this function never does). The socket origins of providers with a key join the
    CSP's connect-src. ``emulated_provider_keys``: the keys the emulated providers' REST endpoints
    and Gemini's ``?key=`` accept, per provider (None: any key of the provider's shape).
    ``session_rate_limit``: tokens per window (seconds) per client address."""
    providers = providers or ProviderConfig()
    connect_src = [*extra_connect_src, *providers.connect_src()]
    policy = AccessPolicy.build(host, allowed_origins, connect_src, pages=web_root.rglob("*.html"))
    app = web.Application(middlewares=[guard_middleware(policy)])
    app[STATS] = StatsRegistry()
    app[CONFIG] = ServerConfig(sndbuf, tool_result_idle_s, tool_result_cap_s)
    app[POLICY] = policy
    app[SESSIONS] = weakref.WeakSet()
    app[RESUMABLE] = {}
    app[RUNNERS] = set()
    app[ENDED] = {}
    app.on_shutdown.append(_stop_sessions)
    app[WEB_ROOT] = web_root
    app[TOKENS] = store = TokenStore()
    keys = None if emulated_provider_keys is None else {p: frozenset(k) for p, k in emulated_provider_keys.items()}
    app[EMULATION] = EmulationContext(
        app[STATS], store, policy, app[SESSIONS], sndbuf, tool_result_idle_s, tool_result_cap_s, keys
    )
    app[TOKEN_SERVICE] = TokenService(policy, providers, store, RateLimiter(*session_rate_limit))
    redact_access_log()  # Gemini's socket URL carries its credential
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", index)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/stats", stats)
    app.router.add_get("/clock", clock)
    # Emulated providers (http://HOST/openai and http://HOST/gemini are their base URLs) and tokens.
    app.router.add_get("/openai/v1/realtime", socket_handler(OpenAIRealtimeSession))
    app.router.add_post("/openai/v1/realtime/client_secrets", client_secrets)
    app.router.add_get(GEMINI_SOCKET, socket_handler(GeminiLiveSession))
    app.router.add_post("/gemini/v1alpha/auth_tokens", auth_tokens)
    app.router.add_route("*", "/session", session_endpoint)
    app.router.add_get("/pyclient.zip", pyclient_zip)
    for prefix, path in runtime_dirs().items():
        app.router.add_get(prefix + "/{path:.*}", static_files(path))
    app.router.add_get("/pyclient/{path:.*}", static_files(ROOT / "pyclient"))
    app.router.add_get("/{path:.*}", static_files(web_root))  # last: everything else
    return app
