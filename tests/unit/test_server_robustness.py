"""The dev server against bad parameters, hostile clients, slow clients and a flood next door."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import urllib.request
import weakref
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from devserver.app import SESSIONS
from devserver.harness import start_server
from devserver.scenarios import SCENARIOS
from devserver.session import Session
from devserver.stats import INLINE_JSON_BYTES, KEEP_CONTROLS, KEEP_ERRORS, KEEP_TOOL_RESULTS
from pyclient.demux import Demux
from pyclient.events import ServerHello, StreamDone, ToolCallReady
from pyclient.frames import DEFAULT_MAX_PAYLOAD, Kind, Sequencer

from .aio import run
from .test_server import converse, with_client

V1 = ("pyclient.v1",)


async def stats_of(client: TestClient, conn_id: int, closed: bool = True) -> dict[str, Any]:
    for _ in range(250):  # the server records the end right after the closing handshake
        st = await (await client.get(f"/stats?id={conn_id}")).json()
        if not closed or not st["open"]:
            return st
        await asyncio.sleep(0.02)
    return st


# ------------------------------------------------------------------ item 5: parameters


@pytest.mark.parametrize(
    "query",
    [
        "scenario=chat&turns=inf",
        "scenario=chat&turns=-inf",
        "scenario=chat&turns=nan",
        "scenario=chat&turns=1e400",
        "scenario=chat&burst=nan",
        "scenario=chat&seed=inf",
        "scenario=chat&tokens=" + "9" * 500,
        "scenario=voice&rates=abc",
        "scenario=voice&rates=,",
        "scenario=voice&rates=1e400",
        "scenario=voice&rates=24000,",
        "scenario=voice&rates=24000,nan",
        "scenario=voice&rates=" + ",".join(["24000"] * 100),
        "scenario=flood&mb=inf",
        "scenario=chat&drop_after=nan",
    ],
)
def test_non_finite_numbers_and_malformed_lists_are_bad_params(query: str) -> None:
    async def t(client: TestClient) -> None:
        out = await converse(client, query)
        assert out["error"].code == "bad_params", out.get("error")
        assert out["events"][-1] == "StreamDone"  # then 'done', as for any bad parameter
        st = out["stats"]
        assert out["close_code"] == st["close_code"] == 1000
        assert not any("server bug" in e for e in st["errors"]), st["errors"]

    with_client(t)


def test_a_scenario_that_crashes_closes_with_1011_and_a_reason() -> None:
    async def crash(s: Session, p: Any) -> None:
        await s.text("about to fail ")
        raise ZeroDivisionError("a bug in a scenario")

    async def t(client: TestClient) -> None:
        async with client.ws_connect("/ws?scenario=crash", protocols=V1) as ws:
            kinds = []
            while (msg := await ws.receive()).type == WSMsgType.BINARY:
                kinds.append(msg.data[1])
            assert msg.type == WSMsgType.CLOSE
            assert msg.data == 1011 and "server bug: ZeroDivisionError" in msg.extra, (msg.data, msg.extra)
        assert kinds == [Kind.CONTROL, Kind.TEXT]  # hello, the text; never 'done'
        st = await stats_of(client, 1)
        assert st["close_code"] == 1011 and not st["open"]
        assert any("ZeroDivisionError" in e for e in st["errors"])

    with mock.patch.dict(SCENARIOS, {"crash": crash}):
        with_client(t)


# ------------------------------------------------------------------ item 6: results still owed


async def answer_calls(
    client: TestClient, query: str, delay: float = 0.0, answer: bool = True, ping_every: float = 0.0
) -> dict[str, Any]:
    """A client that answers the ``repeat`` calls of the upload scenario ``delay`` s apart
    (or never), optionally sending a harmless control every ``ping_every`` s meanwhile."""
    demux, seq, calls = Demux(), Sequencer(), []
    out: dict[str, Any] = {}
    async with client.ws_connect("/ws?" + query, protocols=V1) as ws:

        async def answers() -> None:
            while True:
                if calls and answer:
                    call = calls.pop(0)
                    text = call.arguments["text"] * call.arguments["times"]
                    await asyncio.sleep(delay)
                    await ws.send_bytes(seq.tool_result(call.call_id, ok=True, result=text))
                elif ping_every:
                    await asyncio.sleep(ping_every)
                    await ws.send_bytes(seq.control("still_here"))
                else:
                    await asyncio.sleep(0.01)

        task = asyncio.create_task(answers())
        try:
            async for msg in ws:
                for ev in demux.feed_message(msg.data):
                    if isinstance(ev, ServerHello):
                        out["id"] = ev.fields["connection_id"]
                    elif isinstance(ev, ToolCallReady):
                        calls.append(ev)
                    elif isinstance(ev, StreamDone):
                        await ws.close()
        finally:
            task.cancel()
    out["stats"] = await stats_of(client, out["id"])
    return out


def test_the_wait_for_results_goes_on_while_they_keep_arriving() -> None:
    """4 results 0.25 s apart take 1 s, against an idle limit of 0.4 s: a fixed 0.4 s wait
    would lose the last ones; waiting while results arrive gets them all."""

    async def t(client: TestClient) -> None:
        out = await answer_calls(client, "scenario=upload&calls=4&kb=1&hold=0", delay=0.25)
        st = out["stats"]
        assert st["tool_results_received"] == 4 and st["tool_results_as_expected"] == 4, st["tool_results"]
        assert st["tool_results_missing"] == [] and st["tool_wait_s"] >= 0.6
        assert not st["errors"], st["errors"]

    with_client(t, tool_result_idle_s=0.4)


def test_results_that_never_come_are_named_after_the_idle_limit() -> None:
    async def t(client: TestClient) -> None:
        out = await answer_calls(client, "scenario=upload&calls=3&kb=1&hold=0", answer=False)
        st = out["stats"]
        assert st["tool_results_received"] == 0 and st["tool_results_missing_count"] == 3
        assert [m["name"] for m in st["tool_results_missing"]] == ["repeat"] * 3
        assert 0.3 <= st["tool_wait_s"] < 5
        assert any("3 tool result(s) never arrived" in e for e in st["errors"]), st["errors"]

    with_client(t, tool_result_idle_s=0.3)


def test_the_wait_for_results_has_an_overall_cap() -> None:
    async def t(client: TestClient) -> None:
        out = await answer_calls(client, "scenario=upload&calls=2&kb=1&hold=0", answer=False, ping_every=0.05)
        st = out["stats"]
        assert st["tool_results_missing_count"] == 2
        assert 0.8 <= st["tool_wait_s"] < 5  # the pings kept it going past the idle limit, up to the cap

    with_client(t, tool_result_idle_s=0.3, tool_result_cap_s=0.8)


# ------------------------------------------------------------------ item 7: max_payload in hello


def test_hello_announces_the_largest_payload_the_server_accepts() -> None:
    async def t(client: TestClient) -> None:
        seq = Sequencer()
        async with client.ws_connect("/ws?scenario=chat&turns=1&tokens=5&burst=0", protocols=V1) as ws:
            hello = json.loads((await ws.receive_bytes())[12:])
            limit = hello["max_payload"]
            assert hello["type"] == "hello" and limit == DEFAULT_MAX_PAYLOAD == 1 << 20
            base = len(json.dumps({"call_id": "x", "ok": True, "result": ""}, separators=(",", ":")))
            for size in (limit, limit + 1):  # exactly the limit passes, one byte more is refused
                await ws.send_bytes(seq.tool_result("x", ok=True, result="a" * (size - base)))
            await ws.close()
        st = await stats_of(client, hello["connection_id"])
        assert st["tool_results_received"] == 1 and st["malformed_received"] == 1
        assert any(f"expected no more than {limit}" in e for e in st["errors"]), st["errors"]

    with_client(t)


# ------------------------------------------------------------------ item 14: bounded state


def test_per_connection_state_is_bounded_and_released_at_close() -> None:
    """64 results of ~1 MB for unknown call_ids, 300 big controls, 300 malformed frames and a
    1 MB hello: the connection's record stays small, and its Session is freed at close."""

    async def t(client: TestClient) -> None:
        seq, big = Sequencer(), "x" * 1_000_000
        async with client.ws_connect("/ws?scenario=chat&turns=1&tokens=3&burst=0", protocols=V1) as ws:
            conn_id = json.loads((await ws.receive_bytes())[12:])["connection_id"]
            session = next(iter(client.app[SESSIONS]))
            ref = weakref.ref(session)
            del session
            await ws.send_bytes(seq.control("hello", blob=big))
            for i in range(64):
                result = {"call_id": f"unknown-{i}-" + "c" * 200, "ok": True, "result": big}
                await ws.send_bytes(seq.raw(Kind.TOOL_RESULT, json.dumps(result).encode()))
            for i in range(300):
                await ws.send_bytes(seq.control("playback_position", item_id=i, played_samples=0, pad=big[:5000]))
                await ws.send_bytes(seq.raw(Kind.CONTROL, b"{not json"))
            for _ in range(500):  # until the server has read them all
                if (await stats_of(client, conn_id, closed=False))["frames_received"] >= 1 + 64 + 600:
                    break
                await asyncio.sleep(0.02)
            assert ref() is not None and ref().pending_calls <= 1
            assert len(ref().cut_items) == 300
            await ws.close()
        st = await stats_of(client, conn_id)
        assert not st["open"]
        assert st["tool_results_received"] == 64 and st["tool_results_unknown"] == 64
        assert len(st["tool_results"]) <= KEEP_TOOL_RESULTS
        assert len(st["controls_received"]) <= KEEP_CONTROLS and st["controls_received_count"] == 300
        assert len(st["playback_positions"]) <= KEEP_CONTROLS
        assert len(st["errors"]) <= KEEP_ERRORS and st["errors_count"] >= 300
        for r in st["tool_results"]:  # a big result is kept as size + sha256 + preview
            assert set(r["result"]) == {"bytes", "sha256", "preview"} and r["result"]["bytes"] == 1_000_002
            assert len(json.dumps(r)) < 2 * INLINE_JSON_BYTES
        assert len(json.dumps(st)) < 400_000, len(json.dumps(st))  # was > 64 MB
        for _ in range(100):  # the handler has returned: nothing holds the Session any more
            gc.collect()
            if ref() is None:
                break
            await asyncio.sleep(0.02)
        assert ref() is None, gc.get_referrers(ref())
        assert len(client.app[SESSIONS]) == 0

    with_client(t)


def test_many_pending_calls_are_bounded() -> None:
    from devserver import session as session_module

    async def t(client: TestClient) -> None:
        out = await answer_calls(client, "scenario=upload&calls=30&kb=1&hold=0", answer=False)
        st = out["stats"]
        assert st["tool_calls_sent"] == 30 and st["tool_results_missing_count"] == 10
        assert any("more than 10 tool calls awaiting results" in e for e in st["errors"])

    with mock.patch.object(session_module, "MAX_PENDING_CALLS", 10):
        with_client(t, tool_result_idle_s=0.2)


# ------------------------------------------------------------------ item 15: the receive loop survives


def test_the_receive_loop_survives_any_client_frame() -> None:
    async def t(client: TestClient) -> None:
        seq = Sequencer()
        deep = b'{"type":"x","a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        async with client.ws_connect("/ws?scenario=chat&turns=1&tokens=40&burst=0", protocols=V1) as ws:
            conn_id = json.loads((await ws.receive_bytes())[12:])["connection_id"]
            await ws.send_bytes(seq.raw(Kind.CONTROL, deep))
            nested = b"[" * 200_000 + b"]" * 200_000
            await ws.send_bytes(seq.raw(Kind.TOOL_RESULT, b'{"call_id":"a","ok":true,"result":' + nested + b"}"))
            await ws.send_bytes(seq.control("boom") + seq.control("hello", client="after the bad frames"))
            async for msg in ws:  # the session goes on: the tool call still gets its result
                kind, payload = msg.data[1], msg.data[12:]
                if kind == Kind.TOOL_CALL and b'"name"' in payload:
                    call = json.loads(payload)
                    await ws.send_bytes(seq.tool_result(call["call_id"], ok=True, result="x"))
                elif kind == Kind.CONTROL and json.loads(payload)["type"] == "done":
                    await ws.close()
        st = await stats_of(client, conn_id)
        assert not st["open"] and st["close_code"] == 1000
        assert st["client_hello"] == {"client": "after the bad frames"}
        assert st["tool_results_received"] >= 1
        assert any("boom" in e for e in st["errors"]), st["errors"]

    original = Session._on_control

    def on_control(self: Session, frame: Any) -> None:  # a server bug triggered by one frame
        if frame.type == "boom":
            raise KeyError("boom")
        original(self, frame)

    with mock.patch.object(Session, "_on_control", on_control):
        with_client(t)


# ------------------------------------------------------------------ item 17: no starvation


def test_a_flood_to_a_fast_reader_does_not_starve_stats() -> None:
    """A real server process, a fast reader in another thread: /stats answers throughout and
    the flood goes on. (Before: /stats waited until the flood ended, 11 s here.)"""
    server = start_server()
    stop = threading.Event()
    got = {"bytes": 0, "error": None}

    async def reader() -> None:
        url = server.url.replace("http://", "ws://") + "ws?scenario=flood&mb=10000&seconds=60"
        try:
            async with aiohttp.ClientSession() as s, s.ws_connect(url, protocols=V1, compress=0) as ws:
                while not stop.is_set():
                    msg = await ws.receive()
                    if msg.type != WSMsgType.BINARY:
                        break
                    got["bytes"] += len(msg.data)
        except Exception as exc:  # reported below
            got["error"] = exc

    thread = threading.Thread(target=lambda: asyncio.run(reader()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while got["bytes"] < 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got["bytes"] >= 1_000_000, got
        sent = []
        for _ in range(5):
            t0 = time.monotonic()
            with urllib.request.urlopen(server.url + "stats?id=1", timeout=5) as r:
                sent.append(json.load(r)["bytes_sent"])
            assert time.monotonic() - t0 < 5
            time.sleep(0.2)
        assert sent == sorted(sent) and sent[-1] > sent[0], sent  # the flood progressed meanwhile
    finally:
        stop.set()
        thread.join(30)
        server.stop()
    assert got["error"] is None, got["error"]


def test_a_client_leaving_mid_scenario_ends_the_connection_at_once() -> None:
    """A chat sleeping through a 600 s pause: when the client closes, /stats says closed.
    (serve.py itself: aiohttp's test server would cancel the handler and hide the bug.)"""
    server = start_server()

    async def t() -> dict[str, Any]:
        url = server.url.replace("http://", "ws://") + "ws?scenario=chat&turns=2&tokens=5&burst=0&pause=600"
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url, protocols=V1) as ws:
                conn_id = json.loads((await ws.receive_bytes())[12:])["connection_id"]
                while b'"end_of_turn"' not in await ws.receive_bytes():
                    pass
            return await asyncio.to_thread(server.wait_closed, conn_id, 10)

    try:
        st = run(t())
    finally:
        server.stop()
    assert not st["open"], "the connection still looks open"
    assert any("closed the connection during the scenario" in e for e in st["errors"]), st["errors"]


def test_open_connections_never_drop_out_of_stats() -> None:
    from devserver.stats import StatsRegistry

    reg = StatsRegistry(keep=4)
    long_lived = reg.open("chat", {}, None)
    for _ in range(20):
        reg.close(reg.open("chat", {}, None))
    assert reg.get(long_lived.id) is long_lived
    ids = [c["id"] for c in reg.as_dict()["connections"]]
    assert ids == [1, 18, 19, 20, 21]  # the open one and the 4 most recently closed
    reg.close(long_lived)
    assert [c["id"] for c in reg.as_dict()["connections"]] == [1, 19, 20, 21]
