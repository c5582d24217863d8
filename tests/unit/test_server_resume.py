"""The dev server's resumable pyclient.v1 sessions (devserver/resume.py), driven under CPython
by pyclient's own decoder as the client: drops, resumes, replay, idempotent tool results."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from devserver.resume import RESUME_FAILED, ReplayBuffer
from pyclient.demux import Demux
from pyclient.events import (
    AudioChunk,
    ControlMessage,
    ProtocolErrorEvent,
    ServerHello,
    SessionResumed,
    StreamDone,
    TextDelta,
    ToolCallInvalid,
    ToolCallReady,
)
from pyclient.frames import Sequencer
from pyclient.tools import ToolExecutor, ToolRegistry

from .test_server import with_client

CHAT = "scenario=chat&turns=2&tokens=150&burst=0&pause=0"


class ResumingClient:
    """A session across sockets: one decoder, one sequencer, the last sequence number consumed."""

    def __init__(self, client: TestClient, query: str) -> None:
        self.client, self.query = client, query
        reg = ToolRegistry()
        reg.register(lambda expression: eval(expression, {"__builtins__": {}}), name="calculator")  # test input
        reg.register(lambda: "2026-11-26T12:00:00+00:00", name="clock")
        self.executor, self.demux, self.seq = ToolExecutor(reg), Demux(), Sequencer()
        self.text, self.samples, self.pcm = "", 0, hashlib.sha256()
        self.last_seq: int | None = None
        self.token: str | None = None
        self.session_id: int | None = None
        self.results: dict[str, bytes] = {}  # call_id -> the result frame sent (resent if awaited)
        self.executions: dict[str, int] = {}
        self.gaps = 0
        self.close_codes: list[int | None] = []
        self.resumed: list[dict[str, Any]] = []
        self.done = False
        self.idle_s = 30.0

    async def run(self, *, max_links: int = 10) -> None:
        for _ in range(max_links):
            url = "/ws?" + self.query
            if self.token is not None:  # the session has begun: resume it
                # As the browser client does: the scenario's parameters stay (a restarted server needs them).
                url += f"&resume={self.token}" + ("" if self.last_seq is None else f"&last_seq={self.last_seq}")
            async with self.client.ws_connect(url, protocols=("pyclient.v1",)) as ws:
                await self._read(ws)
            self.close_codes.append(ws.close_code)
            if self.done or self.token is None or ws.close_code == RESUME_FAILED:
                return

    async def _read(self, ws: Any) -> None:
        while True:
            try:  # silence this long: the socket is given up for dead (closed 4000), then resumed
                msg = await asyncio.wait_for(ws.receive(), self.idle_s)
            except TimeoutError:
                await ws.close(code=4000, message=b"dead connection")
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            assert msg.type == WSMsgType.BINARY
            for ev in self.demux.feed_message(msg.data):
                if isinstance(ev, ProtocolErrorEvent):
                    self.gaps += 1
                elif isinstance(ev, TextDelta):
                    self.text += ev.text
                elif isinstance(ev, AudioChunk):
                    self.samples += ev.samples
                    self.pcm.update(ev.pcm)
                elif isinstance(ev, (ToolCallReady, ToolCallInvalid)):
                    self.executions[ev.call_id] = self.executions.get(ev.call_id, 0) + 1
                    o = await self.executor.execute(ev)
                    self.results[o.call_id] = self.seq.tool_result(o.call_id, ok=o.ok, result=o.result, error=o.error)
                    await self._send(ws, self.results[o.call_id])
                elif isinstance(ev, ServerHello):
                    self.token = ev.fields.get("resume_token")
                    self.session_id = ev.fields["connection_id"]
                elif isinstance(ev, SessionResumed):
                    self.resumed.append(ev.fields)
                    self.session_id = ev.fields["connection_id"]  # new after a server restart
                    for call_id in ev.fields["awaiting"]:
                        if call_id in self.results:  # its result may have died with the old socket
                            await self._send(ws, self.results[call_id])
                elif isinstance(ev, StreamDone):
                    self.done = True
                    await ws.close()
            self.last_seq = self.demux.last_seq

    @staticmethod
    async def _send(ws: Any, frame: bytes) -> None:
        try:
            await ws.send_bytes(frame)
        except ConnectionError:
            pass  # the socket is going: the resumed server lists the call as awaited

    async def stats(self) -> dict[str, Any]:
        for _ in range(200):
            st = await (await self.client.get(f"/stats?id={self.session_id}")).json()
            if not st["open"]:
                return st
            await asyncio.sleep(0.02)
        return st


async def whole_session(client: TestClient, query: str) -> ResumingClient:
    c = ResumingClient(client, query)
    await c.run()
    return c


def test_a_dropped_chat_resumes_with_nothing_lost_or_repeated() -> None:
    async def t(client: TestClient) -> None:
        full = await whole_session(client, CHAT)
        c = await whole_session(client, CHAT + "&drop_after=60&drops=3")
        st = await c.stats()
        assert c.done and c.text == full.text and c.gaps == 0
        assert hashlib.sha256(c.text.encode()).hexdigest() == st["text_sha256"]
        assert st["resume"]["connections"] == 4 and st["resume"]["resumes"] == 3, st["resume"]
        assert [code for code in c.close_codes[:3]] != [1000] * 3  # lost without a closing handshake
        assert all(n == 1 for n in c.executions.values()) and len(c.executions) == 2
        assert st["tool_results_as_expected"] == 2 and st["tool_results_missing_count"] == 0
        assert not st["open"] and st["close_code"] == 1000
        assert len(c.resumed) == 3 and all(r["connection_id"] == c.session_id for r in c.resumed)

    with_client(t)


def test_voice_resumes_every_sample_in_order() -> None:
    async def t(client: TestClient) -> None:
        c = await whole_session(client, "scenario=voice&seconds=0.6&drop_after=10&drops=2")
        st = await c.stats()
        assert c.done and c.gaps == 0 and st["resume"]["resumes"] == 2
        assert c.samples == st["audio_samples_sent"] == 30 * 480
        assert c.pcm.hexdigest() == st["audio_sha256"]

    with_client(t)


def test_a_result_lost_with_the_socket_is_resent_and_counted_once() -> None:
    async def t(client: TestClient) -> None:
        c = ResumingClient(client, "scenario=chat&turns=1&tokens=40&burst=0&pause=0")
        async with client.ws_connect("/ws?" + c.query, protocols=("pyclient.v1",)) as ws:
            async for msg in ws:  # read up to the tool call, answer it nowhere (the socket dies)
                for ev in c.demux.feed_message(msg.data):
                    if isinstance(ev, ServerHello):
                        c.token, c.session_id = ev.fields["resume_token"], ev.fields["connection_id"]
                    elif isinstance(ev, ToolCallReady):
                        o = await c.executor.execute(ev)
                        c.results[o.call_id] = c.seq.tool_result(o.call_id, ok=o.ok, result=o.result)
                        c.executions[o.call_id] = 1
                    elif isinstance(ev, TextDelta):
                        c.text += ev.text
                c.last_seq = c.demux.last_seq
                if c.results:
                    await ws.close(code=4000, message=b"heartbeat timeout")
                    break
        # Closed by the client with 4000 (not 1000/1001): the session waits for a resume.
        await c.run()  # resumes: 'resumed' lists the call as awaited, its result goes again
        st = await c.stats()
        assert c.done and c.resumed and list(c.results) == c.resumed[0]["awaiting"]
        assert st["tool_results_received"] == 1 and st["tool_results_as_expected"] == 1
        assert st["resume"]["tool_results_duplicate"] == 0

    with_client(t)


def test_unknown_session_and_evicted_replay_are_refused_with_4410() -> None:
    async def t(client: TestClient) -> None:
        async with client.ws_connect("/ws?resume=nope&last_seq=3", protocols=("pyclient.v1",)) as ws:
            msg = await ws.receive()
        assert msg.type == WSMsgType.CLOSE and ws.close_code == RESUME_FAILED
        assert "unknown or ended session" in msg.extra
        # A session whose replay buffer (1 KiB) lost the frames the client still needs.
        c = ResumingClient(client, CHAT + "&drop_after=100&replay_kb=1")
        async with client.ws_connect("/ws?" + c.query, protocols=("pyclient.v1",)) as ws:
            await c._read(ws)
        assert c.last_seq == 99
        async with client.ws_connect(f"/ws?resume={c.token}&last_seq=2", protocols=("pyclient.v1",)) as ws:
            msg = await ws.receive()
        assert ws.close_code == RESUME_FAILED and "frames after 2 are no longer buffered" in msg.extra
        async with client.ws_connect(f"/ws?resume={c.token}&last_seq=99", protocols=("pyclient.v1",)) as ws:
            await c._read(ws)  # the frames after 99 are still there
        assert c.done

    with_client(t)


def test_without_a_resume_window_a_drop_ends_the_session() -> None:
    async def t(client: TestClient) -> None:
        c = await whole_session(client, CHAT + "&drop_after=30&resume_window=0")
        st = await c.stats()
        assert c.token is None and not c.done and not st["open"] and st["dropped"]
        assert st["close_code"] == 1006 and st["resume"]["connections"] == 1

    with_client(t)


def test_a_session_not_resumed_in_time_ends() -> None:
    async def t(client: TestClient) -> None:
        c = ResumingClient(client, CHAT + "&drop_after=30&resume_window=0.2")
        async with client.ws_connect("/ws?" + c.query, protocols=("pyclient.v1",)) as ws:
            await c._read(ws)
        st = await c.stats()
        assert not st["open"] and "did not resume within 0.2 s" in st["resume"]["end_reason"]
        async with client.ws_connect(f"/ws?resume={c.token}", protocols=("pyclient.v1",)) as ws:
            await ws.receive()
        assert ws.close_code == RESUME_FAILED

    with_client(t)


def test_pings_are_answered_in_order() -> None:
    async def t(client: TestClient) -> None:
        demux, seq = Demux(), Sequencer()
        pongs, gaps = [], 0
        async with client.ws_connect("/ws?" + CHAT, protocols=("pyclient.v1",)) as ws:
            for i in range(5):
                await ws.send_bytes(seq.control("ping", id=i))
            async for msg in ws:
                for ev in demux.feed_message(msg.data):
                    gaps += isinstance(ev, ProtocolErrorEvent)
                    if isinstance(ev, ControlMessage) and ev.type == "pong":
                        pongs.append(ev.fields["id"])
                    elif isinstance(ev, StreamDone):
                        await ws.close()
        assert pongs == [0, 1, 2, 3, 4] and gaps == 0

    with_client(t)


def test_replay_buffer_is_bounded_and_finds_the_resume_point() -> None:
    seq = Sequencer()
    buf = ReplayBuffer(limit=100)
    frames = [seq.text(b"x" * 20) for _ in range(10)]  # 32 bytes each
    for f in frames:
        buf.append(f)
    assert buf.after(None) == 0 and buf.after(4) == 5 and buf.after(9) == 10
    buf.trim(written=2)  # only written frames go
    assert buf.base == 2 and buf.after(None) is None and buf.after(1) == 2 and buf.after(0) is None
    buf.trim(written=10)
    assert buf.bytes <= 100 and buf.get(buf.base) == frames[buf.base]


def test_the_codec_builds_the_resume_url_from_the_hello_and_the_last_frame() -> None:
    from pyclient.protocols.pyclient import PyclientCodec

    server, codec = Sequencer(), PyclientCodec()
    assert codec.resume_url("ws://h/ws?scenario=chat") is None  # no token offered: no resume
    codec.decode(server.control("hello", connection_id=7, resume_token="t-1"))
    assert codec.resume_url("ws://h/ws?scenario=chat") == "ws://h/ws?scenario=chat&resume=t-1&last_seq=0"
    codec.decode(server.text(b"hi"))
    url = codec.resume_url("ws://h/ws?scenario=chat&resume=old&last_seq=0")
    assert url == "ws://h/ws?scenario=chat&resume=t-1&last_seq=1"


def test_a_restarted_server_restores_the_session_from_its_signed_token() -> None:
    """A new app (the server restarted: no sessions in memory) restores a session from the
    token and the resume URL's parameters: the rest of the text, nothing repeated, and the calls
    sent before the restart are awaited again (the client answers them once more)."""
    from aiohttp.test_utils import TestServer

    from devserver.app import make_app

    async def t(client: TestClient) -> None:
        full = await whole_session(client, CHAT)
        c = ResumingClient(client, CHAT)
        async with client.ws_connect("/ws?" + CHAT, protocols=("pyclient.v1",)) as ws:
            async for msg in ws:
                for ev in c.demux.feed_message(msg.data):
                    if isinstance(ev, ServerHello):
                        c.token, c.session_id = ev.fields["resume_token"], ev.fields["connection_id"]
                    elif isinstance(ev, TextDelta):
                        c.text += ev.text
                    elif isinstance(ev, (ToolCallReady, ToolCallInvalid)):
                        o = await c.executor.execute(ev)
                        c.executions[o.call_id] = 1
                        c.results[o.call_id] = c.seq.tool_result(o.call_id, ok=o.ok, result=o.result, error=o.error)
                c.last_seq = c.demux.last_seq
                if len(c.text) > len(full.text) // 2 and c.results:
                    break
        async with TestClient(TestServer(make_app())) as restarted:
            c.client = restarted
            await c.run()  # resume?token&last_seq with the scenario's parameters
            st = await c.stats()
        assert c.done and c.gaps == 0 and c.text == full.text
        assert st["restored_from"] is not None and st["frames_restored"] > 0
        assert c.resumed[0]["restored"] is True and next(iter(c.results)) in c.resumed[0]["awaiting"]
        assert hashlib.sha256(c.text.encode()).hexdigest() == st["text_sha256"]
        assert st["tool_results_as_expected"] == 2 and all(n == 1 for n in c.executions.values())

    with_client(t)


def test_a_forged_or_ended_token_is_not_restored() -> None:
    async def t(client: TestClient) -> None:
        c = await whole_session(client, CHAT)
        for token in (c.token, "1.abc.0000000000000000000000"):
            async with client.ws_connect(f"/ws?{CHAT}&resume={token}&last_seq=3", protocols=("pyclient.v1",)) as ws:
                msg = await ws.receive()
            assert msg.type == WSMsgType.CLOSE and ws.close_code == RESUME_FAILED, token

    with_client(t)


def test_a_frozen_link_is_given_up_by_the_client_and_the_session_resumes() -> None:
    """freeze_after: the server stops writing and reading without closing (half-open). A
    client that hears nothing (here: a ping unanswered for 0.3 s) gives the socket up and
    resumes on a new one: the whole text, nothing twice."""

    async def t(client: TestClient) -> None:
        full = await whole_session(client, CHAT)
        c = ResumingClient(client, CHAT + "&freeze_after=50")
        c.idle_s = 0.5  # silence this long: given up for dead (the frozen socket never closes)
        await asyncio.wait_for(c.run(), 60)
        st = await c.stats()
        assert c.done and c.gaps == 0 and c.text == full.text and st["frozen"]
        assert st["resume"]["resumes"] == 1 and c.close_codes[0] in (4000, 1006)  # 1006: no close reply

    with_client(t)
