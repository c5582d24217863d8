"""The dev server's emulated Gemini Live server, driven by pyclient's own codec.

Shapes follow googleapis/js-genai ``src/live.ts``, ``src/types.ts`` and ``src/tokens.ts`` at
6e9b35c45e21f0d37179a24d29dca01ebed698e6 (see devserver/gemini_live.py for the behaviour of the
real service each refusal copies). Every session runs over a real aiohttp WebSocket on a free
port; ``hangup=`` makes the server close once the scenario is over.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import struct
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from devserver.app import TOKENS, make_app

from .aio import run
from .emulated_client import closed_stats, converse, record_when
from .test_server import converse as converse_v1

GEMINI = "gemini-live"
METHOD = "/gemini/ws/google.ai.generativelanguage.{}.GenerativeService.{}"
CONSTRAINED = METHOD.format("v1alpha", "BidiGenerateContentConstrained")
UNCONSTRAINED = METHOD.format("v1beta", "BidiGenerateContent")
KEY = "AIza" + "x" * 35
SETUP = json.dumps({"setup": {"model": "models/gemini-2.5-flash-native-audio-latest"}})


def with_app(test, **app_kw: Any) -> Any:
    async def runner() -> Any:
        app = make_app(**{"tool_result_idle_s": 3, **app_kw})
        async with TestClient(TestServer(app)) as client:
            return await test(app, client)

    return run(runner())


def token(app, **kw: Any) -> str:
    return app[TOKENS].mint_gemini("models/gemini-2.5-flash-native-audio-latest", **kw)[0]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def tone(ms: int, amplitude: int, rate: int = 16_000) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n)))


def audio_message(pcm: bytes, rate: int = 16_000) -> str:
    data = base64.b64encode(pcm).decode()
    return json.dumps({"realtimeInput": {"audio": {"data": data, "mimeType": f"audio/pcm;rate={rate}"}}})


async def raw_messages(ws, until: str, limit: int = 10_000) -> list[dict[str, Any]]:
    """Server messages (text or binary frames) up to the first that has key ``until``."""
    out = []
    for _ in range(limit):
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type in (WSMsgType.TEXT, WSMsgType.BINARY), msg
        obj = json.loads(msg.data)
        out.append(obj)
        if until in obj or until in obj.get("serverContent", {}):
            return out
    raise AssertionError(f"no {until}")


async def answer_calls(ws, messages: list[dict[str, Any]]) -> None:
    """Answer the tool calls among ``messages`` (as a client would)."""
    for m in messages:
        for call in m.get("toolCall", {}).get("functionCalls", []):
            answer = {"id": call["id"], "name": call["name"], "response": {"output": "2026-11-25T12:00:00+00:00"}}
            await ws.send_str(json.dumps({"toolResponse": {"functionResponses": [answer]}}))


async def open_raw(app, client, query: str):
    return await client.ws_connect(f"{CONSTRAINED}?access_token={token(app)}&{query}")


# ---------------------------------------------------------------------- whole sessions


def test_chat_in_binary_frames_with_tools_and_resumption_handles() -> None:
    async def test(app, client):
        query = "scenario=chat&turns=3&tokens=40&burst=0&pause=0&binary=1&hangup=0.1"
        r = await converse(client, f"{CONSTRAINED}?{query}", GEMINI, token=token(app))
        return r, await closed_stats(client)

    r, st = with_app(test)
    assert st["protocol"] == GEMINI and r.subprotocol is None
    assert r.binary_frames > 0 and r.text_frames == 0 and st["emulation"]["frames"] == "binary"
    assert sha(r.text) == st["text_sha256"] and st["tool_results_as_expected"] == st["tool_calls_sent"] == 3
    assert r.turns == 3 and r.sent[0] == "setup" and not r.protocol_errors
    emu = st["emulation"]
    assert emu["tools_declared"] == ["calculator", "clock", "repeat"] and emu["setup"]["model"].startswith("models/")
    # Not resumable while a call runs, a new handle after each turn: the codec keeps the latest.
    assert [u.resumable for u in r.resumptions] == [False, True] * 3 and emu["handles_sent"] == 3
    assert r.codec_stats["resumption_handle"] == r.resumptions[-1].handle
    assert "access_token" not in json.dumps(st["params"]) or st["params"]["access_token"] == "[redacted]"
    assert st["errors"] == [] and st["close_code"] == 1000


def test_the_same_seed_gives_the_same_text_and_audio_as_pyclient_v1() -> None:
    query = "seed=3&turns=2&tokens=30&burst=0&pause=0&seconds=0.4&items=2&rates=24000,16000"

    async def test(app, client):
        figures = []
        for scenario in ("chat", "voice"):
            v1 = await converse_v1(client, f"scenario={scenario}&{query}")
            await converse(client, f"{CONSTRAINED}?scenario={scenario}&{query}&hangup=0.1", GEMINI, token=token(app))
            figures.append((v1["stats"], await closed_stats(client)))
        return figures

    for v1, emulated in with_app(test):
        for key in ("text_sha256", "audio_samples_sent", "audio_checksum", "audio_sha256", "tool_results_as_expected"):
            assert v1[key] == emulated[key], key
        assert emulated["errors"] == []


def test_voice_audio_at_its_rate_with_output_transcription() -> None:
    async def test(app, client):
        query = "scenario=voice&seconds=0.6&items=2&rates=24000,16000&hangup=0.1"
        r = await converse(client, f"{CONSTRAINED}?{query}", GEMINI, token=token(app))
        return r, await closed_stats(client)

    r, st = with_app(test)
    assert r.samples == st["audio_samples_sent"] == int(0.6 * 24_000) + int(0.6 * 16_000)
    assert r.checksum == st["audio_checksum"] and sha(r.text) == st["text_sha256"]
    assert r.items == {1: int(0.6 * 24_000), 2: int(0.6 * 16_000)} and r.turns == 2
    assert st["tool_results_as_expected"] == 1 and st["errors"] == []


def test_a_scripted_barge_in_interrupts_the_turn_and_sends_no_truncate() -> None:
    async def test(app, client):
        r = await converse(
            client, f"{CONSTRAINED}?scenario=voice&seconds=1&barge=0.5&hangup=0.1", GEMINI, token=token(app)
        )
        return r, await closed_stats(client)

    r, st = with_app(test)
    assert "Interrupted" in r.events and r.codec_stats["interruptions"] == 1 and st["emulation"]["interruptions"] == 1
    assert r.samples == st["audio_samples_sent"] == 12_000 and not r.truncates
    assert [k for k in r.sent if k != "setup"] == [] and st["errors"] == []


def test_flood_faults_and_upload() -> None:
    async def test(app, client):
        out = []
        for query in (
            "scenario=flood&mb=1&text_every=10&tool_every=40",
            "scenario=upload&hold=0.3&calls=3&kb=64",
            "scenario=faults",
        ):
            r = await converse(client, f"{CONSTRAINED}?{query}&hangup=0.1", GEMINI, token=token(app))
            out.append((r, await closed_stats(client)))
        return out

    (flood, fst), (upload, ust), (faults, tst) = with_app(test)
    for r, st in ((flood, fst), (upload, ust)):
        assert sha(r.text) == st["text_sha256"] and r.checksum == st["audio_checksum"]
        assert st["tool_results_as_expected"] == st["tool_calls_sent"] > 0 and st["errors"] == []
    assert faults.text == "before the faults. after the faults." and sha(faults.text) == tst["text_sha256"]
    assert faults.codec_stats["bad_json"] == 2 and faults.codec_stats["protocol_errors"] == 2
    assert faults.codec_stats["ignored"] == 1
    assert {o.name: o.error["type"] for o in faults.results} == {
        "launch_rockets": "unknown_tool",
        "calculator": "invalid_arguments",
    }
    assert tst["tool_results_received"] == 2 and tst["errors"] == []


def test_a_cancelled_call_gets_no_result() -> None:
    async def test(app, client):
        query = "scenario=chat&turns=1&tokens=20&burst=0&cancel_tool=1&hangup=0.1"
        r = await converse(client, f"{CONSTRAINED}?{query}", GEMINI, token=token(app), slow={"clock"})
        return r, await closed_stats(client)

    r, st = with_app(test)
    cancelled = st["emulation"]["tool_calls_cancelled"]
    assert r.cancelled == cancelled and len(cancelled) == 1
    assert r.codec_stats["results_suppressed"] == 1 and st["emulation"]["results_for_cancelled"] == 0
    assert st["tool_results_as_expected"] == 1 and st["tool_results_missing_count"] == 0 and st["errors"] == []


def test_a_result_for_a_cancelled_call_is_an_error() -> None:
    async def test(app, client):
        ws = await open_raw(
            app, client, "scenario=chat&turns=1&tokens=20&burst=0&cancel_tool=1&cancel_ms=50&hangup=0.2"
        )
        await ws.send_str(SETUP)
        messages = await raw_messages(ws, "toolCallCancellation")
        call_id = messages[-1]["toolCallCancellation"]["ids"][0]
        answer = {"id": call_id, "name": "clock", "response": {"output": "late"}}
        await ws.send_str(json.dumps({"toolResponse": {"functionResponses": [answer]}}))
        await raw_messages(ws, "toolCall")
        await ws.close()
        return await closed_stats(client)

    st = with_app(test)
    assert st["emulation"]["results_for_cancelled"] == 1
    assert any("which the server cancelled" in e for e in st["errors"])


def test_go_away_then_the_connection_ends() -> None:
    async def test(app, client):
        query = "scenario=chat&turns=5&tokens=5&burst=0&pause=10&lifetime_s=0.6&goaway_s=0.3"
        r = await converse(client, f"{CONSTRAINED}?{query}", GEMINI, token=token(app))
        return r, await closed_stats(client)

    r, st = with_app(test)
    assert [g.time_left_ms for g in r.goaways] == [300] and st["emulation"]["goaway_sent"]
    assert r.close_code == 1011 == st["close_code"]


def test_the_microphone_at_16khz_ends_with_audio_stream_end() -> None:
    async def test(app, client):
        ws = await open_raw(app, client, "scenario=voice&seconds=0.1&listen=5&hangup=0.2")
        await ws.send_str(SETUP)
        await raw_messages(ws, "setupComplete")
        for _ in range(25):  # 500 ms of silence
            await ws.send_str(audio_message(bytes(640)))
        await ws.send_str(json.dumps({"realtimeInput": {"audioStreamEnd": True}}))
        text = ""
        while "I heard" not in text:
            messages = await raw_messages(ws, "turnComplete")
            await answer_calls(ws, messages)
            for m in messages:
                text += m.get("serverContent", {}).get("outputTranscription", {}).get("text", "")
        await ws.close()
        return text, await closed_stats(client)

    text, st = with_app(test)
    assert "I heard 500 ms of your audio (8000 samples at 16000 Hz)." in text
    assert st["mic_rates"] == [16_000] and st["mic_samples_received"] == 8000
    assert st["emulation"]["audio_stream_end"] == 1 and st["errors"] == []


def test_loud_microphone_audio_interrupts_and_another_rate_is_an_error() -> None:
    async def test(app, client):
        ws = await open_raw(app, client, "scenario=voice&seconds=2&hangup=0.2")
        await ws.send_str(SETUP)
        await raw_messages(ws, "modelTurn")
        for _ in range(5):
            await ws.send_str(audio_message(tone(20, 8000)))
        messages = await raw_messages(ws, "interrupted")
        await ws.send_str(audio_message(bytes(320), rate=8000))
        await raw_messages(ws, "turnComplete")
        await ws.close()
        return messages, await closed_stats(client)

    messages, st = with_app(test)
    assert messages[-1] == {"serverContent": {"interrupted": True}}
    assert st["emulation"]["interruptions"] == 1 and st["mic_rates"] == [8000, 16_000]
    assert st["errors"] == ["microphone audio at 8000 Hz (audio/pcm;rate=8000); Gemini Live takes 16000 Hz"]


# ---------------------------------------------------------------------- the client's mistakes


@pytest.mark.parametrize(
    ("first", "error"),
    [
        ('{"realtimeInput": {"audioStreamEnd": true}}', "'realtimeInput' before setup"),
        ("{not json", "bad JSON"),
        ('{"setup": {"model": "gemini"}}', "setup refused"),
        ('{"setup": {"model": "models/x", "colour": "blue"}}', 'Unknown name "colour"'),
    ],
)
def test_setup_first_or_the_socket_closes_with_1007(first: str, error: str) -> None:
    async def test(app, client):
        ws = await open_raw(app, client, "scenario=chat")
        await ws.send_str(first)
        closing = await ws.receive()
        return closing, await closed_stats(client)

    closing, st = with_app(test)
    assert closing.type == WSMsgType.CLOSE and closing.data == 1007 == st["close_code"]
    assert error in st["errors"][0]


def test_an_unknown_message_after_setup_closes_with_1007() -> None:
    async def test(app, client):
        ws = await open_raw(app, client, "scenario=chat&turns=1&tokens=5&burst=0&pause=5")
        await ws.send_str(SETUP)
        await raw_messages(ws, "setupComplete")
        await ws.send_str(json.dumps({"dance": {}}))
        while (msg := await ws.receive()).type != WSMsgType.CLOSE:
            pass
        return msg, await closed_stats(client)

    closing, st = with_app(test)
    assert closing.data == 1007 and 'Unknown name "dance"' in closing.extra
    assert "unknown client message 'dance'" in st["errors"][0]


# ---------------------------------------------------------------------- credentials


async def close_of(client, path: str) -> tuple[int, str]:
    ws = await client.ws_connect(path)
    await ws.send_str(SETUP)
    msg = await ws.receive()
    if msg.type != WSMsgType.CLOSE:
        assert json.loads(msg.data) == {"setupComplete": {}}
        await ws.close()
        return 0, "setupComplete"
    return msg.data, msg.extra


def test_tokens_keys_and_methods_are_checked_as_the_service_does() -> None:
    async def test(app, client):
        tok = token(app)
        spent = token(app)
        results = {
            "token as key": await close_of(client, f"{UNCONSTRAINED}?key={tok}"),
            "token on v1beta": await close_of(client, f"{UNCONSTRAINED}?access_token={tok}"),
            "key on constrained": await close_of(client, f"{CONSTRAINED}?key={KEY}"),
            "unknown token": await close_of(client, f"{CONSTRAINED}?access_token=auth_tokens/nope"),
            "first use": await close_of(client, f"{CONSTRAINED}?access_token={spent}&hangup=0.05"),
            "second use": await close_of(client, f"{CONSTRAINED}?access_token={spent}"),
            "key": await close_of(client, f"{UNCONSTRAINED}?key={KEY}&hangup=0.05"),
            "bad key": await close_of(client, f"{UNCONSTRAINED}?key=not-a-key"),
        }
        listing = await (await client.get("/stats")).json()
        return results, listing, tok, spent

    results, listing, tok, spent = with_app(test)
    assert results["token as key"] == (1007, "API key not valid. Please pass a valid API key.")
    assert results["token on v1beta"][0] == 1008 and "unregistered callers" in results["token on v1beta"][1]
    assert results["key on constrained"][0] == 1008 and results["unknown token"][0] == 1008
    assert results["first use"] == (0, "setupComplete") and results["second use"][0] == 1008
    assert results["key"] == (0, "setupComplete") and results["bad key"][0] == 1007
    text = json.dumps(listing)
    assert tok not in text and spent not in text and KEY not in text  # /stats redacts credentials
    assert "single use" in text


def test_the_emulation_accepts_only_the_configured_keys() -> None:
    async def test(app, client):
        return await close_of(client, f"{UNCONSTRAINED}?key={KEY}"), await close_of(
            client, f"{UNCONSTRAINED}?key=k-1&hangup=0.05"
        )

    bad, good = with_app(test, emulated_provider_keys={"gemini": {"k-1"}})
    assert bad[0] == 1007 and good == (0, "setupComplete")


def test_resuming_needs_the_old_socket_closed_and_uses_no_token() -> None:
    async def test(app, client):
        tok = token(app)
        ws = await client.ws_connect(f"{CONSTRAINED}?access_token={tok}&scenario=chat&turns=2&tokens=5&burst=0&pause=5")
        await ws.send_str(json.dumps({"setup": {"model": "models/x", "sessionResumption": {}}}))
        messages = await raw_messages(ws, "toolCall")
        call = messages[-1]["toolCall"]["functionCalls"][0]
        answer = {"id": call["id"], "name": call["name"], "response": {"output": 1}}
        await ws.send_str(json.dumps({"toolResponse": {"functionResponses": [answer]}}))
        update = (await raw_messages(ws, "sessionResumptionUpdate"))[-1]
        while not update["sessionResumptionUpdate"]["resumable"]:
            update = (await raw_messages(ws, "sessionResumptionUpdate"))[-1]
        handle = update["sessionResumptionUpdate"]["newHandle"]
        resume = json.dumps({"setup": {"model": "models/x", "sessionResumption": {"handle": handle}}})
        other = await client.ws_connect(f"{CONSTRAINED}?access_token={token(app)}")
        await other.send_str(resume)
        while_open = await other.receive()
        await ws.close()
        await closed_stats(client, 1)
        again = await client.ws_connect(
            f"{CONSTRAINED}?access_token={tok}&hangup=0.05&scenario=chat&turns=1&tokens=3&burst=0"
        )
        await again.send_str(resume)
        first = json.loads((await again.receive()).data)
        await again.close()
        return while_open, first, await closed_stats(client)

    while_open, first, st = with_app(test)
    assert while_open.data == 1011
    assert first == {"setupComplete": {}} and st["emulation"]["resumed_from"] == 1


def _texts(messages: list[dict[str, Any]]) -> str:
    parts = [m["serverContent"]["modelTurn"]["parts"] for m in messages if "modelTurn" in m.get("serverContent", {})]
    return "".join(p["text"] for ps in parts for p in ps if "text" in p)


async def _answer_calls(ws, messages: list[dict[str, Any]]) -> None:
    for m in messages:
        for call in m.get("toolCall", {}).get("functionCalls", []):
            expr = call["args"].get("expression")
            output = eval(expr, {"__builtins__": {}}) if expr else "2026-11-26T12:00:00Z"  # test input
            answer = {"id": call["id"], "name": call["name"], "response": {"output": output}}
            await ws.send_str(json.dumps({"toolResponse": {"functionResponses": [answer]}}))


def test_a_resumed_session_goes_on_after_the_turns_its_handle_covers() -> None:
    """The resumed connection skips the turns the handle covers (not sent, but accounted): its
    /stats cover the whole session's text and tool calls."""
    query = "scenario=chat&turns=2&tokens=20&burst=0&pause=0"

    async def test(app, client):
        first = await client.ws_connect(f"{CONSTRAINED}?access_token={token(app)}&{query}")
        await first.send_str(json.dumps({"setup": {"model": "models/x", "sessionResumption": {}}}))
        turn1 = await raw_messages(first, "toolCall")
        await _answer_calls(first, turn1)
        turn1 += await raw_messages(first, "turnComplete")
        update = (await raw_messages(first, "sessionResumptionUpdate"))[-1]["sessionResumptionUpdate"]
        await first.close()
        await closed_stats(client, 1)
        second = await client.ws_connect(f"{CONSTRAINED}?access_token={token(app)}&{query}&hangup=0.05")
        resume = {"setup": {"model": "models/x", "sessionResumption": {"handle": update["newHandle"]}}}
        await second.send_str(json.dumps(resume))
        turn2 = await raw_messages(second, "toolCall")
        await _answer_calls(second, turn2)
        turn2 += await raw_messages(second, "turnComplete")
        await second.close()
        st = await closed_stats(client, 2)
        whole = await client.ws_connect(f"{CONSTRAINED}?access_token={token(app)}&{query}")
        await whole.send_str(json.dumps({"setup": {"model": "models/x"}}))
        ref = await raw_messages(whole, "toolCall")
        await _answer_calls(whole, ref)
        ref += await raw_messages(whole, "toolCall")
        await whole.close()
        return _texts(turn1), _texts(turn2), st, ref

    text1, text2, st, ref = with_app(test)
    assert update_ok(st) and text1 and text2 and not text2.startswith(text1)
    assert st["emulation"]["skipped_turns"] == 1 and st["resumed_connections"] == [1]
    assert st["text_sha256"] == sha(text1 + text2), "the resumed connection's stats cover the session"
    assert st["tool_calls_sent"] == 2 and st["tool_results_as_expected"] == 2, st["tool_results"]
    assert _texts(ref).startswith(text1 + text2[:10])  # the same session on one connection


def update_ok(st: dict[str, Any]) -> bool:
    return st["errors"] == [] and st["emulation"]["resumed_from"] == 1


def user_turn(text: str) -> str:
    return json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": True}})


def test_asked_turns_wait_for_the_user_and_a_resumed_session_for_the_user_again() -> None:
    """asked=1, as the service: a model turn answers a user turn. A session resumed from the
    handle before a cut turn does not regenerate that turn until the client sends its user
    turn again."""
    query = "scenario=chat&turns=2&tokens=20&burst=0&pause=0&asked=1"

    async def test(app, client):
        first = await client.ws_connect(f"{CONSTRAINED}?access_token={token(app)}&{query}")
        await first.send_str(json.dumps({"setup": {"model": "models/x", "sessionResumption": {}}}))
        await raw_messages(first, "setupComplete")
        waiting = await record_when(client, 1, lambda st: st["emulation"]["waiting_for_user"])
        await first.send_str(user_turn("q1"))
        turn1 = await raw_messages(first, "toolCall")
        await _answer_calls(first, turn1)
        turn1 += await raw_messages(first, "turnComplete")
        update = (await raw_messages(first, "sessionResumptionUpdate"))[-1]["sessionResumptionUpdate"]
        await first.send_str(user_turn("q2"))
        cut = await raw_messages(first, "modelTurn")  # turn 2 began: the loss cuts it short
        await first.close()
        await closed_stats(client, 1)
        second = await client.ws_connect(f"{CONSTRAINED}?access_token={token(app)}&{query}&hangup=0.05")
        resume = {"setup": {"model": "models/x", "sessionResumption": {"handle": update["newHandle"]}}}
        await second.send_str(json.dumps(resume))
        await raw_messages(second, "setupComplete")
        held = await record_when(client, 2, lambda st: st["emulation"]["waiting_for_user"])
        await second.send_str(user_turn("q2"))  # the user turn the handle does not hold
        turn2 = await raw_messages(second, "toolCall")
        await _answer_calls(second, turn2)
        turn2 += await raw_messages(second, "turnComplete")
        await second.close()
        return waiting, _texts(turn1), _texts(cut), held, _texts(turn2), await closed_stats(client, 2)

    waiting, text1, cut, held, text2, st = with_app(test)
    assert waiting["frames_sent"] == 1, "only setupComplete before the user's turn"
    assert held["frames_sent"] == 1, "the resumed session did not regenerate the cut turn unasked"
    assert cut and text2.startswith(cut) and text1 and text2
    assert st["errors"] == [] and st["emulation"]["user_turns"] == 1 and st["emulation"]["turns_waited_for_user"] == 1
    assert st["text_sha256"] == sha(text1 + text2) and st["tool_results_as_expected"] == 2
