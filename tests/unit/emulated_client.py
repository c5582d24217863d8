"""A CPython client for the emulated provider sockets: pyclient's connection core and codecs
(``pyclient.protocols.openai_realtime`` / ``gemini_live``) over a real aiohttp WebSocket.

It does what the browser shell does with the events: renders text, "plays" audio (counts the
samples and takes the ring's checksum), runs tools as tasks, answers with the codec's messages,
and on a barge-in cuts playback at a chosen point (half of what it received of the item, so the
truncate's ``audio_end_ms`` is known exactly).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from devserver.stats import pcm_checksum
from pyclient.connection import Connection
from pyclient.events import (
    AudioChunk,
    GoAway,
    Interrupted,
    ProtocolErrorEvent,
    ResumptionUpdate,
    ServerError,
    SessionReady,
    TextDelta,
    ToolCallCancelled,
    ToolCallInvalid,
    ToolCallReady,
    TurnEnded,
)
from pyclient.playback import PlaybackPosition
from pyclient.protocols import SessionConfig, get_codec
from pyclient.schema import spec_for
from pyclient.tools import ToolExecutor, ToolRegistry


def demo_tools(slow: set[str] | None = None) -> tuple[ToolRegistry, dict[str, asyncio.Event]]:
    """The demo's tools (calculator, clock, repeat). A tool named in ``slow`` waits until the
    client saw its call cancelled (the event per name is set by ``Run``)."""
    reg = ToolRegistry()
    gates = {name: asyncio.Event() for name in slow or ()}

    def calculator(expression: str) -> float:
        """Evaluate a product."""
        a, b = expression.split("*")
        return int(a) * int(b)

    async def clock() -> str:
        """The time."""
        if "clock" in gates:
            await asyncio.wait_for(gates["clock"].wait(), 10)
        return "2026-11-25T12:00:00+00:00"

    def repeat(text: str, times: int) -> str:
        """``text`` repeated."""
        return text * times

    reg.register(calculator)
    reg.register(clock)
    reg.register(repeat)
    return reg, gates


@dataclass
class Run:
    """What one client session saw and did."""

    text: str = ""
    samples: int = 0
    checksum: int = 0
    pcm_sha: Any = field(default_factory=hashlib.sha256)
    items: dict[Any, int] = field(default_factory=dict)  # audio item -> samples received
    events: list[str] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)  # tool outcomes
    cancelled: list[str] = field(default_factory=list)
    truncates: list[dict[str, Any]] = field(default_factory=list)  # what the client sent
    errors: list[ServerError] = field(default_factory=list)
    protocol_errors: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # client message types / keys sent
    binary_frames: int = 0
    text_frames: int = 0
    turns: int = 0
    goaways: list[Any] = field(default_factory=list)
    resumptions: list[ResumptionUpdate] = field(default_factory=list)
    close_code: int | None = None
    subprotocol: str | None = None
    codec_stats: dict[str, Any] = field(default_factory=dict)
    response_creates_in_flight_max: int = 0


async def converse(
    client: TestClient,
    url: str,
    protocol: str,
    *,
    token: str | None = None,
    codec_options: dict[str, Any] | None = None,
    cut: bool = True,
    slow: set[str] | None = None,
    on_ready: Callable[[Any, Connection], Any] | None = None,
    extra_protocols: list[str] | None = None,
    timeout: float = 60,
) -> Run:
    """One session against ``url`` until the server closes it (use ``hangup=`` in the URL)."""
    codec = get_codec(protocol, **(codec_options or {}))
    conn = Connection(codec)
    registry, gates = demo_tools(slow)
    executor = ToolExecutor(registry)
    config = SessionConfig(tools=tuple(spec_for(t) for t in registry), model=None, instructions="Be brief.")
    run = Run()
    full_url = codec.url(url, token=token)
    protocols = [*conn.subprotocols(token), *(extra_protocols or [])]
    tasks: set[asyncio.Task] = set()
    last_item: list[Any] = [None]

    async with client.ws_connect(full_url, protocols=protocols) as ws:
        run.subprotocol = ws.protocol

        async def send(messages: list[Any]) -> None:
            for m in messages:
                run.sent.append(_kind(m))
                if isinstance(m, str):
                    await ws.send_str(m)
                else:
                    await ws.send_bytes(m)

        async def answer(call: Any) -> None:
            outcome = await executor.execute(call)
            run.results.append(outcome)
            await send(codec.tool_result(outcome))

        await send(conn.opened(ws.protocol or "", config))
        async with asyncio.timeout(timeout):
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                if msg.type == WSMsgType.BINARY:
                    run.binary_frames += 1
                    nbytes = len(msg.data)
                else:
                    run.text_frames += 1
                    nbytes = len(msg.data.encode())
                events = conn.receive(msg.data, nbytes)
                await send(conn.take_outgoing())
                for ev in events:
                    run.events.append(type(ev).__name__)
                    if isinstance(ev, TextDelta):
                        run.text += ev.text
                    elif isinstance(ev, AudioChunk):
                        if ev.samples:
                            pcm = bytes(ev.pcm)
                            run.samples += ev.samples
                            run.checksum = pcm_checksum(run.checksum, pcm)
                            run.pcm_sha.update(pcm)
                            run.items[ev.item_id] = run.items.get(ev.item_id, 0) + ev.samples
                            last_item[0] = ev.item_id
                    elif isinstance(ev, (ToolCallReady, ToolCallInvalid)):
                        task = asyncio.create_task(answer(ev))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    elif isinstance(ev, ToolCallCancelled):
                        run.cancelled += list(ev.call_ids)
                        for gate in gates.values():
                            gate.set()
                    elif isinstance(ev, Interrupted) and cut and last_item[0] is not None:
                        item = last_item[0]
                        received = run.items.get(item, 0)
                        played = received // 2
                        rate = 24_000
                        messages = codec.cut([PlaybackPosition(item, played, played * 1000 / rate, rate, "server")])
                        for m in messages:
                            if '"conversation.item.truncate"' in m:
                                run.truncates.append(
                                    {"item_id": item, "played": played, "audio_end_ms": played * 1000 // rate}
                                )
                        await send(messages)
                    elif isinstance(ev, ServerError):
                        run.errors.append(ev)
                    elif isinstance(ev, ProtocolErrorEvent):
                        run.protocol_errors.append(ev.reason)
                    elif isinstance(ev, TurnEnded):
                        run.turns += 1
                    elif isinstance(ev, GoAway):
                        run.goaways.append(ev)
                    elif isinstance(ev, ResumptionUpdate):
                        run.resumptions.append(ev)
                    elif isinstance(ev, SessionReady) and on_ready is not None:
                        await send(list(on_ready(codec, conn) or []))
                stats = codec.stats()
                run.response_creates_in_flight_max = max(
                    run.response_creates_in_flight_max, stats.get("responses_in_flight", 0)
                )
        for task in list(tasks):
            task.cancel()
    run.close_code = ws.close_code
    run.codec_stats = codec.stats()
    return run


def _kind(message: Any) -> str:
    import json

    try:
        obj = json.loads(message)
    except (ValueError, TypeError):
        return "?"
    if isinstance(obj, dict):
        return obj.get("type") or next(iter(obj), "?")
    return "?"


async def record_when(client: TestClient, conn_id: int, condition: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """The server's record of a connection once ``condition(record)`` holds (10 s at most)."""
    st = None
    for _ in range(500):
        listing = await (await client.get("/stats")).json()
        st = next((c for c in listing["connections"] if c["id"] == conn_id), None)
        if st is not None and condition(st):
            return st
        await asyncio.sleep(0.02)
    raise AssertionError(f"connection {conn_id} never got there: {st}")


async def closed_stats(client: TestClient, conn_id: int | None = None) -> dict[str, Any]:
    """The server's record of a connection once it has ended (the newest if ``conn_id`` is None)."""
    for _ in range(200):
        listing = await (await client.get("/stats")).json()
        conns = listing["connections"]
        if conns:
            st = conns[-1] if conn_id is None else next(c for c in conns if c["id"] == conn_id)
            if not st["open"]:
                return st
        await asyncio.sleep(0.02)
    raise AssertionError("the connection did not end")
