"""The demo page, built on pyclient's public API only.

Query parameters for the page: ``protocol`` (pyclient | openai-realtime | gemini-live |
pipecat; the dev server emulates the first three, and ``POST /session`` mints the token for
OpenAI and Gemini; a Pipecat bot is your own, given by ``url``),
``url`` (any server's socket, e.g. ``ws://127.0.0.1:8765/ws`` for your own bot; no token is
fetched then), ``scenario`` (chat | voice | flood | faults | upload | hostile),
``transport`` (auto | websocketstream | websocket), ``audio`` (auto | sab | postmessage),
``throttle`` (playback speed in (0, 1], a simulated slow device), ``queue_kb`` (the classic
WebSocket's receive-queue bound), ``client_credit`` (0: never offer credit flow control;
default: offered on every transport, the server picks), ``context_rate=device`` (play
through the worklet's resampler), ``prebuffer_ms``, ``send_high_kb``/``send_low_kb`` (send
watermarks), ``tool_call_timeout`` (s a streamed tool call may stay unfinished),
``drain_timeout`` (s to send what is owed after ``done``), ``ws_path`` (another socket path
than ``/ws``), ``approve`` (demo tools that wait for the user's approval, comma-separated:
``approve=calculator``), ``approval_timeout`` (s before an undecided call is denied),
``max_pending_approvals``, ``reconnect=0`` (a lost connection ends the session instead of
resuming it), ``renew_s`` (move the session to a new connection after this many seconds, at a
turn boundary; OpenAI's default is 55 minutes), ``heartbeat_s`` (pyclient.v1: ping after this
much silence, give the socket up if unanswered as long), ``pending_chars`` (text waiting for
the next paint before the stream waits), ``autostart=1`` to connect on load. Every
other parameter (turns, seconds, mb, credit, ...) is passed on to the socket.
"""

import asyncio

import demo_tools
import js
from pyodide.ffi import create_proxy

import pyclient
from pyclient.browser import websocketstream_available
from pyclient.browser.jsutil import js_object

PAGE_PARAMS = (
    "protocol",
    "url",
    "scenario",
    "transport",
    "audio",
    "throttle",
    "autostart",
    "queue_kb",
    "client_credit",
    "context_rate",
    "prebuffer_ms",
    "send_high_kb",
    "send_low_kb",
    "tool_call_timeout",
    "drain_timeout",
    "ws_path",
    "approve",
    "approval_timeout",
    "max_pending_approvals",
    "reconnect",
    "renew_s",
    "heartbeat_s",
    "pending_chars",
)
MAX_TIMELINE_ENTRIES = 50
THROTTLED_SPEED = 0.25
READOUT_MS = 250

query = js.URLSearchParams.new(js.window.location.search)
doc = js.document
ui = {
    name: doc.getElementById(name)
    for name in (
        "protocol",
        "scenario",
        "transport",
        "connect",
        "disconnect",
        "interrupt",
        "throttle",
        "mic",
        "say",
        "send",
    )
}
current: dict = {"client": None, "speed": float(query.get("throttle") or 1.0)}
chart: dict = {"js": None, "last": None, "busy": False}
_keep = []  # event-handler proxies live as long as the page


def param(name, default=None):
    value = query.get(name)  # JS null when absent
    return value if isinstance(value, str) else default


def set_status(text, cls=""):
    el = doc.getElementById("status")
    el.textContent = text
    el.className = "status " + cls


PROVIDERS = {"openai-realtime": "openai", "gemini-live": "gemini"}


def scenario_query():
    """The scenario and every parameter that is not the page's own, as a query string."""
    q = js.URLSearchParams.new()
    q.set("scenario", ui["scenario"].value)
    for name in query:
        if name not in PAGE_PARAMS:
            q.set(name, query.get(name))
    return q.toString()


def ws_url():
    return param("ws_path", "/ws") + "?" + scenario_query()


async def mint_session(protocol):
    """The page's own token endpoint: an ephemeral credential and the socket URL to use (the
    dev server mints a real one when a provider key is configured, else one for its emulation)."""
    provider = PROVIDERS[protocol]
    resp = await js.fetch(f"/session?provider={provider}&{scenario_query()}", js_object(method="POST"))
    data = (await resp.json()).to_py()
    if not resp.ok:
        message = (data.get("error") or {}).get("message") or f"HTTP {resp.status}"
        raise pyclient.PyclientError(f"token endpoint: {message}")
    return {"token": data["token"], "url": data["url"]}


def set_buttons(connected):
    ui["connect"].disabled = connected
    ui["disconnect"].disabled = not connected
    ui["interrupt"].disabled = not connected
    ui["mic"].disabled = not connected
    ui["send"].disabled = not connected
    if not connected:
        show_mic(False)


def show_mic(on):
    ui["mic"].textContent = "Mic on · click to stop" if on else "Mic off"
    ui["mic"].classList.toggle("active", on)


async def connect():
    if current["client"] is not None and current["client"].state in ("connecting", "open", "closing"):
        return
    doc.getElementById("transcript").replaceChildren()
    if chart["js"] is not None:
        chart["js"].clear()
    doc.getElementById("tools").replaceChildren()
    doc.getElementById("timeline").replaceChildren()
    options = {}
    if param("reconnect") == "0":
        options["reconnect"] = False
    if param("renew_s"):
        options["session_renew_s"] = float(param("renew_s"))
    if param("heartbeat_s"):
        options["heartbeat_s"] = float(param("heartbeat_s"))
    if param("queue_kb"):
        options["receive_queue_bytes"] = int(param("queue_kb")) * 1024
    if param("send_high_kb"):
        options["send_high"] = int(param("send_high_kb")) * 1024
        options["send_low"] = int(param("send_low_kb") or 0) * 1024 or options["send_high"] // 4
    if param("context_rate"):
        options["audio_context_rate"] = param("context_rate")
    if param("prebuffer_ms"):
        options["prebuffer_ms"] = float(param("prebuffer_ms"))
    if param("client_credit"):
        options["credit"] = param("client_credit") != "0"
    if param("tool_call_timeout"):
        options["tool_call_timeout"] = float(param("tool_call_timeout"))
    if param("drain_timeout"):
        options["drain_timeout"] = float(param("drain_timeout"))
    if param("max_pending_approvals"):
        options["max_pending_approvals"] = int(param("max_pending_approvals"))
    if param("pending_chars"):
        options["max_pending_chars"] = int(param("pending_chars"))
    approve = frozenset(name.strip() for name in param("approve", "").split(",") if name.strip())
    approval_timeout = float(param("approval_timeout")) if param("approval_timeout") else None
    audio = param("audio", "auto")
    protocol = ui["protocol"].value
    url = param("url")
    if protocol == "pyclient":
        target, token = url or ws_url(), None
    elif protocol == "pipecat":
        if not url:
            set_status("error: a Pipecat bot needs its socket in ?url=ws://host:port", "error")
            return
        target, token = url, None
    else:
        # A server given by URL is used as it is; else the page's token endpoint says where.
        target, token = url, (None if url else (lambda: mint_session(protocol)))
    client = pyclient.Client(
        protocol=protocol,
        token=token,
        transport=ui["transport"].value,
        transcript="transcript",
        tool_cards="tools",
        audio=audio != "off",
        audio_mode=audio if audio != "off" else "auto",
        playback_speed=current["speed"],
        **options,
    )
    try:
        demo_tools.register(client.tools, approve=approve, approval_timeout=approval_timeout)
    except ValueError as exc:
        set_status(f"error: {exc}", "error")
        return
    current["client"] = client
    client.on_event(on_connection_event)
    set_buttons(True)
    set_status("connecting…")
    try:
        await client.connect(target)
    except pyclient.PyclientError as exc:
        set_status(f"error: {exc}", "error")
        set_buttons(False)
        return
    set_status(f"open · {client.transport_name} · {client.transport.protocol}", "open")
    timeline(f"connected · {client.transport_name} · {client.transport.protocol}")
    info = await client.wait_closed()
    if client.state == "error":
        set_status(f"error: {client.error}", "error")
    elif client.server_errors:
        err = client.server_errors[-1]
        set_status(f"server error ({err['code']}): {err['message']}", "error")
    else:
        set_status(f"closed ({info.get('code')}) · {client.transport_name}")
    set_buttons(False)


def timeline(text, cls=""):
    """One line of the connection timeline (bounded: the oldest lines go)."""
    ol = doc.getElementById("timeline")
    li = doc.createElement("li")
    li.textContent = f"{js.performance.now() / 1000:.1f} s · {text}"
    if cls:
        li.className = cls
    ol.appendChild(li)
    while ol.children.length > MAX_TIMELINE_ENTRIES:
        ol.firstElementChild.remove()


def on_connection_event(event):
    if isinstance(event, pyclient.Reconnecting):
        lost = f"lost (code {event.code})" if event.code is not None else "lost"
        timeline(f"{lost} · retry {event.attempt} in {event.delay_s * 1000:.0f} ms", "lost")
        set_status(f"reconnecting… (attempt {event.attempt})", "")
    elif isinstance(event, pyclient.Reconnected):
        timeline(f"reconnected after {event.after_s * 1000:.0f} ms (connection {event.connection + 1})", "back")
        set_status("open · reconnected", "open")
    elif isinstance(event, pyclient.SessionResumed):
        replayed, awaiting = event.fields.get("replayed", 0), len(event.fields.get("awaiting") or [])
        timeline(f"resumed · {replayed} frame(s) replayed · {awaiting} tool result(s) awaited", "back")
    elif isinstance(event, pyclient.ResumeFailed):
        timeline(f"resume failed: {event.reason}", "lost")


async def disconnect():
    client = current["client"]
    if client is not None:
        await client.close()


def _fmt(value):
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


async def fetch_server_wait(conn_id):
    """The server's cumulative send-wait (drain + credit) for our connection, from /stats."""
    try:
        resp = await js.fetch(f"/stats?id={conn_id}")
        if not resp.ok:
            return None
        st = (await resp.json()).to_py()
        return st["send_wait_s"] + st["credit_wait_s"]
    except Exception:  # the chart is best effort; the stats table still updates
        return None


async def update_chart(s):
    conn = s["server"].get("connection_id")
    if chart["js"] is None or conn is None:
        return
    now = js.performance.now() / 1000
    wait = await fetch_server_wait(conn)
    prev = chart["last"]
    stall = 0.0
    if wait is not None and prev is not None and prev[2] == conn and now > prev[0]:
        stall = min(1.0, max(0.0, (wait - prev[1]) / (now - prev[0])))
    if wait is not None:
        chart["last"] = (now, wait, conn)
    ring = (s["audio"] or {}).get("ring_fill", 0) * 2
    chart["js"].push(now, s["buffered_bytes"], ring, stall)


def update_readout(*_):
    client = current["client"]
    if client is None:
        return
    s = client.stats()
    if s["state"] == "open" and not chart["busy"]:
        chart["busy"] = True
        task = asyncio.ensure_future(update_chart(s))
        task.add_done_callback(lambda _: chart.__setitem__("busy", False))
    a = s["audio"] or {}
    rows = [
        ("state", s["state"]),
        ("reconnects / resumes", f"{s['reconnects']} / {s['resumes']}"),
        ("transport", s["transport"]),
        ("frames in", s["frames_in"]),
        ("bytes in", s["bytes_in"]),
        ("buffered bytes", s["buffered_bytes"]),
        ("buffered bytes max", s["buffered_bytes_max"]),
        ("text chars rendered", s["text"]["chars_rendered"]),
        ("tool calls / results / errors", "{calls} / {results_sent} / {errors}".format(**s["tools"])),
        ("audio mode", a.get("mode")),
        ("audio rate (stream/context)", f"{a.get('sample_rate')} / {a.get('context_rate', '-')}"),
        ("ring fill / capacity", f"{_fmt(a.get('ring_fill', 0))} / {_fmt(a.get('ring_capacity', 0))}"),
        ("samples played", a.get("samples_played", 0)),
        ("buffered audio (ms)", a.get("buffered_ms", 0.0)),
        ("underruns / silence (ms)", f"{a.get('underruns', 0)} / {a.get('silence_ms', 0.0):.0f}"),
        ("audio frames dropped", s["receive"].get("dropped_frames", 0)),
        ("mic sent (samples)", s["mic"]["sent_samples"]),
        ("send wait (s)", s["send"].get("send_wait_s", 0.0)),
        ("malformed", s["malformed"]),
    ]
    table = doc.getElementById("readout")
    table.replaceChildren()
    for name, value in rows:
        tr = doc.createElement("tr")
        for text in (name, _fmt(value)):
            td = doc.createElement("td")
            td.textContent = text
            tr.appendChild(td)
        table.appendChild(tr)


def show_throttle():
    slow = current["speed"] < 1.0
    ui["throttle"].textContent = f"Playback at {current['speed']:g}x" if slow else "Throttle playback"
    ui["throttle"].classList.toggle("active", slow)


def on(el, event, coro_fn):
    handler = create_proxy(lambda *_: asyncio.ensure_future(coro_fn()))
    _keep.append(handler)
    el.addEventListener(event, handler)


async def load_chart():
    from pyclient.browser.jsutil import import_module

    module = await import_module("/chart.js")
    chart["js"] = module.createChart(doc.getElementById("chart"))


def main():
    ui["scenario"].value = param("scenario", "chat")
    ui["protocol"].value = param("protocol", "pyclient")
    ui["transport"].value = param("transport", "auto")
    on(ui["connect"], "click", connect)
    on(ui["disconnect"], "click", disconnect)

    async def interrupt():
        if current["client"] is not None:
            await current["client"].interrupt()

    on(ui["interrupt"], "click", interrupt)

    async def throttle():
        current["speed"] = 1.0 if current["speed"] < 1.0 else THROTTLED_SPEED
        show_throttle()
        if current["client"] is not None:
            current["client"].throttle_playback(current["speed"])

    on(ui["throttle"], "click", throttle)

    async def mic():
        client = current["client"]
        if client is None:
            return
        try:
            if client.mic.active:
                show_mic(False)
                await client.stop_microphone()
            else:
                await client.start_microphone()
                show_mic(True)
        except pyclient.PyclientError as exc:
            set_status(f"microphone: {exc}", "error")
        except Exception as exc:  # getUserMedia refused, no device...
            set_status(f"microphone unavailable: {exc}", "error")

    on(ui["mic"], "click", mic)

    async def say():
        client = current["client"]
        text = ui["say"].value.strip()
        if client is None or not text:
            return
        try:
            await client.send_text(text)
            ui["say"].value = ""
        except pyclient.PyclientError as exc:
            set_status(f"error: {exc}", "error")

    on(ui["send"], "click", say)
    show_throttle()
    tick = create_proxy(update_readout)
    _keep.append(tick)
    js.setInterval(tick, READOUT_MS)
    set_buttons(False)
    wss = "WebSocketStream available" if websocketstream_available() else "no WebSocketStream (classic fallback)"
    set_status(f"ready · {wss}")
    _keep.append(asyncio.ensure_future(load_chart()))
    doc.body.dataset.pyclient = "ready"
    if param("autostart") == "1":
        _keep.append(asyncio.ensure_future(connect()))


main()
