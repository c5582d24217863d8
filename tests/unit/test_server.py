"""The dev server under CPython, driven by pyclient's own sans-I/O core as the client."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from devserver.app import make_app
from pyclient.demux import Demux
from pyclient.events import AudioChunk, ServerError, ServerHello, StreamDone, TextDelta, ToolCallInvalid, ToolCallReady
from pyclient.flow import CreditWindow
from pyclient.frames import Sequencer
from pyclient.tools import ToolExecutor, ToolRegistry

from .aio import run


def with_client(test, **app_kw: Any):
    """Run ``test(client)`` against a fresh app (``make_app(**app_kw)``) on a free port."""

    async def runner() -> Any:
        async with TestClient(TestServer(make_app(**app_kw))) as client:
            return await test(client)

    return run(runner())


async def converse(client: TestClient, query: str, protocols: tuple[str, ...] = ("pyclient.v1",), **kw) -> dict:
    """Run one session like a real client: render text, answer tools, close after 'done'."""
    reg = ToolRegistry()
    reg.register(lambda expression: eval(expression, {"__builtins__": {}}), name="calculator")  # trusted test input
    reg.register(lambda: "2026-11-25T12:00:00+00:00", name="clock")
    ex, demux, seq = ToolExecutor(reg), Demux(), Sequencer()
    out: dict[str, Any] = {"text": "", "samples": 0, "pcm": hashlib.sha256(), "events": [], "max_in_flight": 0}
    credit = CreditWindow(kw["window"]) if "window" in kw else None
    async with client.ws_connect("/ws?" + query, protocols=protocols) as ws:
        out["protocol"] = ws.protocol
        if credit is not None:
            await ws.send_bytes(seq.credit(credit.initial()))
        async for msg in ws:
            assert msg.type == WSMsgType.BINARY
            if credit is not None:
                credit.on_received(len(msg.data))
                out["max_in_flight"] = max(out["max_in_flight"], credit.received - credit.granted + credit.window)
                assert credit.received <= credit.granted, "server sent past its credit"
            for ev in demux.feed_message(msg.data):
                out["events"].append(type(ev).__name__)
                if isinstance(ev, TextDelta):
                    out["text"] += ev.text
                elif isinstance(ev, AudioChunk):
                    out["samples"] += ev.samples
                    out["pcm"].update(ev.pcm)
                elif isinstance(ev, (ToolCallReady, ToolCallInvalid)):
                    o = await ex.execute(ev)
                    await ws.send_bytes(seq.tool_result(o.call_id, ok=o.ok, result=o.result, error=o.error))
                elif isinstance(ev, ServerHello):
                    out["id"] = ev.fields["connection_id"]
                    out["hello"] = ev.fields
                elif isinstance(ev, ServerError):
                    out["error"] = ev
                elif isinstance(ev, StreamDone):
                    await ws.close()
            if credit is not None:
                grant = credit.on_consumed(len(msg.data))
                if grant:
                    await ws.send_bytes(seq.credit(grant))
    out["close_code"] = ws.close_code
    for _ in range(100):  # the server records the close right after the handshake
        stats = await (await client.get(f"/stats?id={out['id']}")).json()
        if not stats["open"]:
            break
        await asyncio.sleep(0.02)
    out["stats"] = stats
    return out


def test_chat_text_tools_and_stats_agree() -> None:
    async def t(client: TestClient) -> None:
        out = await converse(client, "scenario=chat&turns=2&tokens=60&burst=0&pause=0")
        st = out["stats"]
        assert hashlib.sha256(out["text"].encode()).hexdigest() == st["text_sha256"]
        assert "🙂" in out["text"]
        assert st["tool_calls_sent"] == 2 and st["tool_results_received"] == 2
        assert all(r["as_expected"] for r in st["tool_results"]), st["tool_results"]
        assert st["close_code"] == 1000 and not st["errors"]
        assert out["events"][-1] == "StreamDone"

    with_client(t)


def test_voice_audio_is_accounted_and_hashed() -> None:
    async def t(client: TestClient) -> None:
        out = await converse(client, "scenario=voice&seconds=0.3")
        st = out["stats"]
        assert out["samples"] == st["audio_samples_sent"] == 15 * 480
        assert out["pcm"].hexdigest() == st["audio_sha256"]
        assert st["tool_results_received"] == 1

    with_client(t)


def test_credit_flow_control_is_never_exceeded() -> None:
    async def t(client: TestClient) -> None:
        out = await converse(
            client, "scenario=flood&mb=0.5", protocols=("pyclient.v1.credit", "pyclient.v1"), window=70_000
        )
        st = out["stats"]
        assert out["protocol"] == "pyclient.v1.credit"
        assert st["credit_waits"] > 0 and st["bytes_sent"] <= st["credit_granted"]
        assert out["samples"] == st["audio_samples_sent"]

    with_client(t)


def test_server_without_credit_support_refuses_the_subprotocol() -> None:
    async def t(client: TestClient) -> None:
        async with client.ws_connect(
            "/ws?scenario=chat&credit=0", protocols=("pyclient.v1.credit", "pyclient.v1")
        ) as ws:
            assert ws.protocol == "pyclient.v1"

    with_client(t)


def test_drop_after_aborts_the_connection_like_a_crash() -> None:
    async def t(client: TestClient) -> None:
        out = await converse(client, "scenario=chat&turns=1&tokens=200&burst=0&drop_after=40&resume_window=0")
        st = out["stats"]
        assert st["dropped"] and st["frames_sent"] == 40
        assert any("dropped on purpose" in e for e in st["errors"]), st["errors"]
        assert out["close_code"] not in (1000, 1001), "a drop has no closing handshake"
        assert "StreamDone" not in out["events"] and 0 < len(out["events"]) <= 40
        full = await converse(client, "scenario=chat&turns=1&tokens=200&burst=0")
        assert full["text"].startswith(out["text"]) and len(out["text"]) < len(full["text"])

    with_client(t)


def test_bad_scenario_and_params_are_reported_as_error_frames() -> None:
    async def t(client: TestClient) -> None:
        out = await converse(client, "scenario=nope")
        assert out["error"].code == "unknown_scenario" and "chat" in out["error"].message
        out = await converse(client, "scenario=chat&turns=abc")
        assert out["error"] == ServerError("bad_params", "turns='abc' is not a number")

    with_client(t)


def test_static_files_are_cross_origin_isolated_and_package_is_zipped() -> None:
    async def t(client: TestClient) -> None:
        for path in ("/", "/main.py", "/vendor/pyodide/pyodide.mjs", "/pyclient/browser/js/player-worklet.js"):
            r = await client.get(path)
            assert r.status == 200, path
            assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        r = await client.get("/pyclient/browser/js/player-worklet.js")
        assert "javascript" in r.headers["Content-Type"]
        names = zipfile.ZipFile(io.BytesIO(await (await client.get("/pyclient.zip")).read())).namelist()
        assert "pyclient/__init__.py" in names and "pyclient/browser/client.py" in names
        assert (await client.get("/stats?id=99999")).status == 404

    with_client(t)


def test_faults_scenario_is_survivable() -> None:
    async def t(client: TestClient) -> None:
        out = await converse(client, "scenario=faults")
        assert out["text"] == "before the faults. bad utf-8: \ufffd! after the faults."
        assert out["events"].count("ProtocolErrorEvent") == 6
        errors = [r["error"]["type"] for r in out["stats"]["tool_results"]]
        assert sorted(errors) == ["invalid_arguments", "unknown_tool"]

    with_client(t)


def test_pcm_checksum_matches_the_worklets_definition() -> None:
    from devserver.stats import pcm_checksum

    samples = [0, 1, -1, 32767, -32768, 1234, -4321]
    pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    expected = 0
    for s in samples:  # ring-layout.js: (Math.imul(sum, 31) + (sample & 0xffff)) | 0
        expected = (expected * 31 + (s & 0xFFFF)) % 2**32
    assert pcm_checksum(0, pcm) == expected
    # Continuing across frames gives the same as one pass.
    assert pcm_checksum(pcm_checksum(0, pcm[:6]), pcm[6:]) == expected


def test_stamped_text_frames_and_the_clock_for_the_latency_benchmark() -> None:
    # stamp=1: every text frame's bytes so far and when it left, on the server's wall clock,
    # which GET /clock gives (bench/latency.py measures the page's offset from it).
    import time

    async def test(client: TestClient) -> None:
        before = time.time() * 1000
        out = await converse(client, "scenario=chat&turns=1&tokens=40&burst=0&pause=0&stamp=1")
        stats = await (await client.get("/stats")).json()
        conn = stats["connections"][-1]
        stamps = conn["text_stamps"]
        assert len(stamps) == conn["text_frames_sent"] and stamps[-1][0] == len(out["text"].encode())
        assert [b for b, _ in stamps] == sorted(b for b, _ in stamps)
        assert before <= stamps[0][1] <= stamps[-1][1] <= time.time() * 1000
        resp = await client.get("/clock")
        assert resp.headers["Cache-Control"] == "no-store"
        assert abs((await resp.json())["ms"] - time.time() * 1000) < 1000
        plain = await converse(client, "scenario=chat&turns=1&tokens=5&burst=0&pause=0")
        assert plain["text"] and "text_stamps" not in (await (await client.get("/stats")).json())["connections"][-1]

    with_client(test)


def test_voice_tps_sends_text_in_bursts_at_that_rate() -> None:
    async def test(client: TestClient) -> None:
        out = await converse(client, "scenario=voice&seconds=1&tps=200")
        assert out["samples"] == 24000
        assert len(out["text"].split()) == 200  # a second at 200 tokens/s, 50 every 250 ms

    with_client(test)


def test_handshake_ms_answers_the_upgrade_that_late() -> None:
    import time

    async def test(client: TestClient) -> None:
        t0 = time.monotonic()
        async with client.ws_connect("/ws?scenario=chat&tokens=1&handshake_ms=300", protocols=("pyclient.v1",)):
            assert time.monotonic() - t0 >= 0.3

    with_client(test)
