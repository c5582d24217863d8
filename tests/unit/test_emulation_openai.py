"""The dev server's emulated OpenAI Realtime (GA) server, driven by pyclient's own codec.

Shapes follow openai-node ``src/resources/realtime/realtime.ts`` and ``client-secrets.ts`` at
7b7d6ca71130d37ec09792c50056b47861f2eccf (see devserver/openai_realtime.py for the behaviour of
the real service each refusal copies). Every session runs over a real aiohttp WebSocket on a
free port; ``hangup=`` makes the server close once the scenario is over.
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

OPENAI = "openai-realtime"


def with_app(test, **app_kw: Any) -> Any:
    async def runner() -> Any:
        app = make_app(**{"tool_result_idle_s": 3, **app_kw})
        async with TestClient(TestServer(app)) as client:
            return await test(app, client)

    return run(runner())


def token(app) -> str:
    return app[TOKENS].mint_openai("gpt-realtime")[0]


def url(query: str) -> str:
    return f"/openai/v1/realtime?model=gpt-realtime&{query}"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def tone(ms: int, amplitude: int, rate: int = 24_000) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n)))


async def raw_events(ws, until: str, limit: int = 10_000) -> list[dict[str, Any]]:
    """Server events up to and including the first of type ``until``."""
    out = []
    for _ in range(limit):
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == WSMsgType.TEXT, msg
        event = json.loads(msg.data)
        out.append(event)
        if event["type"] == until:
            return out
    raise AssertionError(f"no {until}")


async def answer_calls(ws, events: list[dict[str, Any]]) -> None:
    """Answer the function calls among ``events`` and ask for the next response (as the codec does)."""
    calls = [
        e["item"] for e in events if e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call"
    ]
    for call in calls:
        item = {"type": "function_call_output", "call_id": call["call_id"], "output": '"2026-11-25T12:00:00+00:00"'}
        await ws.send_str(json.dumps({"type": "conversation.item.create", "item": item}))
    if calls:
        await ws.send_str(json.dumps({"type": "response.create"}))


SESSION_UPDATE = json.dumps({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["audio"]}})


# ---------------------------------------------------------------------- whole sessions


def test_chat_session_text_tools_and_one_response_at_a_time() -> None:
    async def test(app, client):
        r = await converse(
            client, url("scenario=chat&turns=3&tokens=40&burst=0&pause=0&hangup=0.1"), OPENAI, token=token(app)
        )
        st = await closed_stats(client)
        return r, st

    r, st = with_app(test)
    assert r.subprotocol == "realtime" and st["subprotocol"] == "realtime" and st["protocol"] == OPENAI
    assert sha(r.text) == st["text_sha256"] and r.text.count("🙂") >= 3
    assert st["tool_calls_sent"] == 3 and st["tool_results_as_expected"] == 3 and st["tool_results_unexpected"] == 0
    emu = st["emulation"]
    # A response with calls is followed by the client's outputs and one response.create.
    assert emu["response_create_received"] == 3 and r.codec_stats["response_create_sent"] == 3
    assert r.response_creates_in_flight_max <= 1 and not r.errors and not r.protocol_errors
    assert emu["tools_declared"] == ["calculator", "clock", "repeat"] and emu["session_update"]["type"] == "realtime"
    assert emu["scenario_done"] and st["errors"] == [] and st["close_code"] == 1000 == r.close_code


def test_the_same_seed_gives_the_same_text_and_audio_as_pyclient_v1() -> None:
    query = "seed=7&turns=2&tokens=30&burst=0&pause=0&seconds=0.4&items=2"

    async def test(app, client):
        figures = []
        for scenario in ("chat", "voice"):
            v1 = await converse_v1(client, f"scenario={scenario}&{query}")
            await converse(client, url(f"scenario={scenario}&{query}&hangup=0.1"), OPENAI, token=token(app))
            emulated = await closed_stats(client)
            figures.append((v1["stats"], emulated))
        return figures

    for v1, emulated in with_app(test):
        for key in ("text_sha256", "audio_samples_sent", "audio_checksum", "audio_sha256", "tool_results_as_expected"):
            assert v1[key] == emulated[key], key
        assert emulated["errors"] == []


def test_voice_streams_24khz_audio_with_its_transcript_in_real_time() -> None:
    async def test(app, client):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        r = await converse(client, url("scenario=voice&seconds=1&items=2&hangup=0.1"), OPENAI, token=token(app))
        return r, await closed_stats(client), loop.time() - t0

    r, st, elapsed = with_app(test)
    assert r.samples == st["audio_samples_sent"] == 2 * 24_000
    assert r.checksum == st["audio_checksum"] and r.pcm_sha.hexdigest() == st["audio_sha256"]
    assert sha(r.text) == st["text_sha256"] and r.codec_stats["text_dropped"] == 0
    assert st["tool_results_as_expected"] == 1  # the clock call in the first item
    assert elapsed >= 1.9  # 20 ms per delta at real time
    # One response per item; the call split item 1 into two message items.
    assert len(r.items) == 3 and st["emulation"]["responses"] == 2 and st["errors"] == []


def test_a_scripted_barge_in_is_answered_with_an_exact_truncate() -> None:
    async def test(app, client):
        r = await converse(client, url("scenario=voice&seconds=1&barge=0.5&hangup=0.1"), OPENAI, token=token(app))
        return r, await closed_stats(client)

    r, st = with_app(test)
    emu = st["emulation"]
    assert emu["interruptions"] == 1 and "Interrupted" in r.events
    (sent,) = r.truncates
    (got,) = emu["truncates"]
    assert got["item_id"] == sent["item_id"] and got["audio_end_ms"] == sent["audio_end_ms"] == 250
    assert got["ok"] and got["samples_sent"] == 12_000 and got["cut_by_server"] and not got["complete"]
    assert emu["truncates_ok"] == 1 and emu["truncates_bad"] == 0
    # The server VAD cancelled the response itself: the client truncates but sends no
    # response.cancel (that would only draw response_cancel_not_active).
    assert emu["response_cancel_received"] == 0 and emu["cancels_not_active"] == 0
    assert r.errors == []
    assert r.samples == st["audio_samples_sent"] == 12_000 and st["errors"] == []


def test_flood_and_upload_keep_text_and_tools_whole() -> None:
    async def test(app, client):
        out = []
        for query in ("scenario=flood&mb=1&text_every=10&tool_every=40", "scenario=upload&hold=0.3&calls=3&kb=64"):
            r = await converse(client, url(f"{query}&hangup=0.1"), OPENAI, token=token(app))
            out.append((r, await closed_stats(client)))
        return out

    for r, st in with_app(test):
        assert sha(r.text) == st["text_sha256"] and r.samples == st["audio_samples_sent"]
        assert r.checksum == st["audio_checksum"]
        assert st["tool_results_as_expected"] == st["tool_calls_sent"] > 0 and st["errors"] == []


def test_faults_are_counted_and_survived() -> None:
    async def test(app, client):
        r = await converse(client, url("scenario=faults&hangup=0.1"), OPENAI, token=token(app))
        return r, await closed_stats(client)

    r, st = with_app(test)
    assert r.text == "before the faults. after the faults." and sha(r.text) == st["text_sha256"]
    assert r.codec_stats["bad_json"] == 1 and r.codec_stats["protocol_errors"] == 3 and r.codec_stats["ignored"] == 1
    failed = {o.name: o.error["type"] for o in r.results}
    assert failed == {"launch_rockets": "unknown_tool", "calculator": "invalid_arguments"}
    assert st["tool_results_received"] == 2 and st["errors"] == []


def test_the_microphone_barges_in_through_the_emulated_vad() -> None:
    async def by_hand(app, client):
        ws = await client.ws_connect(
            url("scenario=voice&seconds=2&hangup=0.1"), protocols=["realtime", f"openai-insecure-api-key.{token(app)}"]
        )
        await raw_events(ws, "session.created")
        await ws.send_str(SESSION_UPDATE)
        await raw_events(ws, "response.output_audio.delta")
        loud = tone(20, 8000)
        for _ in range(10):  # 200 ms of speech
            await ws.send_str(
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(loud).decode()})
            )
        events = await raw_events(ws, "response.done")
        for _ in range(30):  # 600 ms of silence
            await ws.send_str(
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(960)).decode()})
            )
        events += await raw_events(ws, "input_audio_buffer.speech_stopped")
        await ws.close()
        return events, await closed_stats(client)

    events, st = with_app(by_hand)
    kinds = [e["type"] for e in events]
    started = kinds.index("input_audio_buffer.speech_started")
    done = events[kinds.index("response.done")]
    assert started < kinds.index("response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert st["mic_rates"] == [24_000] and st["mic_samples_received"] == 40 * 480
    assert st["emulation"]["interruptions"] == 1 and st["emulation"]["mic_rate"] == 24_000


def test_listen_reports_the_microphone_audio_it_heard() -> None:
    async def test(app, client):
        ws = await client.ws_connect(
            url("scenario=voice&seconds=0.1&listen=5&hangup=0.1"),
            protocols=["realtime", f"openai-insecure-api-key.{token(app)}"],
        )
        await raw_events(ws, "session.created")
        await ws.send_str(SESSION_UPDATE)
        for _ in range(25):  # 500 ms of silence, then the microphone stops (no more appends)
            await ws.send_str(
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(960)).decode()})
            )
        events = await raw_events(ws, "response.done")
        await answer_calls(ws, events)
        while "I heard" not in "".join(e.get("delta", "") for e in events):
            events += await raw_events(ws, "response.done")
        await ws.close()
        return events, await closed_stats(client)

    events, st = with_app(test)
    text = "".join(e.get("delta", "") for e in events if e["type"].endswith("transcript.delta"))
    assert "I heard 500 ms of your audio (12000 samples at 24000 Hz)." in text
    assert st["mic_rates"] == [24_000] and st["tool_results_as_expected"] == 1 and st["errors"] == []


# ---------------------------------------------------------------------- the client's mistakes


def test_bad_truncates_are_errors_with_reasons() -> None:
    async def test(app, client):
        ws = await client.ws_connect(
            url("scenario=flood&mb=0.0096&hangup=0.3"),
            protocols=["realtime", f"openai-insecure-api-key.{token(app)}"],
        )
        await raw_events(ws, "session.created")
        await ws.send_str(SESSION_UPDATE)
        events = await raw_events(ws, "response.done")
        item = next(e["item_id"] for e in events if e["type"] == "response.output_audio.delta")

        def truncate(item_id: str, ms: Any) -> str:
            return json.dumps(
                {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": ms}
            )

        for message in (
            truncate(item, 250),
            truncate(item, 12.5),
            truncate("item_nope", 10),
            truncate(item, 200),
            truncate(item, 100),
            truncate(item, 50),
        ):
            await ws.send_str(message)
        replies: list[dict[str, Any]] = []
        while len(replies) < 6:
            reply = json.loads((await ws.receive()).data)
            if reply["type"] in ("error", "conversation.item.truncated"):
                replies.append(reply)
        await ws.close()
        return replies, await closed_stats(client)

    replies, st = with_app(test)
    assert [r["type"] for r in replies] == ["error"] * 4 + ["conversation.item.truncated", "error"]
    checks = [(t["audio_end_ms"], t["ok"]) for t in st["emulation"]["truncates"]]
    assert checks == [(250, False), (12.5, False), (10, False), (200, False), (100, True), (50, False)]
    problems = [t.get("problem", "") for t in st["emulation"]["truncates"]]
    assert "beyond the 200 ms" in problems[0] and "not an integer" in problems[1] and "no audio item" in problems[2]
    assert "nothing was cut" in problems[3] and "truncated already" in problems[5]
    assert st["errors_count"] == 5 and all("conversation.item.truncate" in e for e in st["errors"])


def test_a_response_create_while_one_is_in_flight_is_an_error() -> None:
    async def test(app, client):
        ws = await client.ws_connect(
            url("scenario=chat&turns=1&tokens=50&burst=1&hangup=0.2"),
            protocols=["realtime", f"openai-insecure-api-key.{token(app)}"],
        )
        await raw_events(ws, "session.created")
        await ws.send_str(SESSION_UPDATE)
        await raw_events(ws, "response.created")
        await ws.send_str(json.dumps({"type": "response.create", "event_id": "mine_1"}))
        events = await raw_events(ws, "error")
        await ws.close()
        return events[-1], await closed_stats(client)

    error, st = with_app(test)
    assert (
        error["error"]["code"] == "conversation_already_has_active_response" and error["error"]["event_id"] == "mine_1"
    )
    assert any("two response.create in flight" in e for e in st["errors"])


def test_unknown_events_bad_json_and_the_beta_session_shape_are_errors() -> None:
    async def test(app, client):
        ws = await client.ws_connect(
            url("scenario=flood&mb=0.001&hangup=0.2"),
            protocols=["realtime", f"openai-insecure-api-key.{token(app)}"],
        )
        await raw_events(ws, "session.created")
        beta = {"type": "session.update", "session": {"modalities": ["text", "audio"], "voice": "alloy"}}
        for message in (
            json.dumps(beta),
            "{oops",
            json.dumps({"type": "response.dance"}),
            b"\x00binary",
            SESSION_UPDATE,
        ):
            await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
        events = await raw_events(ws, "session.updated")
        await ws.close()
        return events, await closed_stats(client)

    events, st = with_app(test)
    codes = [e["error"]["code"] for e in events if e["type"] == "error"]
    assert codes == ["unknown_parameter", "invalid_json", "invalid_value", "invalid_json"]
    assert st["errors_count"] == 4
    assert "session.modalities" in st["errors"][0] and "bad JSON" in st["errors"][1]
    assert "unknown client event type 'response.dance'" in st["errors"][2]


# ---------------------------------------------------------------------- connecting and limits


@pytest.mark.parametrize("how", ["subprotocol", "header"])
def test_the_beta_is_refused(how: str) -> None:
    async def test(app, client):
        protocols = ["realtime", f"openai-insecure-api-key.{token(app)}"]
        headers = {}
        if how == "subprotocol":
            protocols.insert(1, "openai-beta.realtime-v1")
        else:
            headers["OpenAI-Beta"] = "realtime=v1"
        ws = await client.ws_connect(url("scenario=chat"), protocols=protocols, headers=headers)
        first = json.loads((await ws.receive()).data)
        closing = await ws.receive()
        return first, closing, await closed_stats(client)

    first, closing, st = with_app(test)
    assert first["type"] == "error" and first["error"]["code"] == "beta_api_shape_disabled"
    assert closing.type == WSMsgType.CLOSE and closing.data == 4000
    assert st["close_code"] == 4000 and "refused: beta requested" in st["errors"][0]


def test_only_minted_unexpired_client_secrets_open_a_session() -> None:
    async def attempt(client, key: str) -> tuple[dict, Any]:
        ws = await client.ws_connect(url("scenario=chat"), protocols=["realtime", f"openai-insecure-api-key.{key}"])
        first = json.loads((await ws.receive()).data)
        closing = await ws.receive()
        return first, closing

    async def test(app, client):
        out = [await attempt(client, "ek_" + "0" * 32)]
        good, record = app[TOKENS].mint_openai("gpt-realtime", seconds=600)
        record.expires_at = record.new_session_until = 0.0  # expired
        out.append(await attempt(client, good))
        listing = await (await client.get("/stats")).json()
        return out, listing, good

    out, listing, good = with_app(test)
    for first, closing in out:
        assert first["error"]["code"] == "invalid_api_key" and closing.data == 3000
        assert closing.extra == "invalid_request_error.invalid_api_key"
    assert good not in json.dumps(listing)


def test_a_secret_opens_several_sessions_until_it_expires() -> None:
    async def test(app, client):
        key = token(app)
        runs = [
            await converse(client, url("scenario=chat&turns=1&tokens=5&burst=0&hangup=0.05"), OPENAI, token=key)
            for _ in range(2)
        ]
        return runs

    assert all(r.close_code == 1000 and r.text for r in with_app(test))


def test_the_session_limit_ends_with_session_expired() -> None:
    async def test(app, client):
        r = await converse(
            client, url("scenario=chat&turns=5&tokens=5&burst=0&pause=10&max_session_s=0.3"), OPENAI, token=token(app)
        )
        return r, await closed_stats(client)

    r, st = with_app(test)
    assert [e.code for e in r.errors] == ["session_expired"]
    assert r.close_code == 1001 == st["close_code"] and st["emulation"]["session_expired"]


def test_bad_parameters_are_an_error_event_not_a_crash() -> None:
    async def test(app, client):
        r = await converse(client, url("scenario=voice&rate=16000&hangup=0.05"), OPENAI, token=token(app))
        r2 = await converse(client, url("scenario=hostile&hangup=0.05"), OPENAI, token=token(app))
        return r, r2

    r, r2 = with_app(test)
    assert r.errors[0].code == "bad_params" and "24000 Hz only" in r.errors[0].message and r.close_code == 1000
    assert r2.errors[0].code == "unknown_scenario"


def test_another_sites_page_cannot_open_the_emulated_sockets() -> None:
    async def test(app, client):
        statuses = []
        for path in (
            url("scenario=chat"),
            "/gemini/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent",
        ):
            resp = await client.get(
                path, headers={"Origin": "http://evil.example", "Connection": "Upgrade", "Upgrade": "websocket"}
            )
            statuses.append(resp.status)
        return statuses

    assert with_app(test) == [403, 403]


def test_a_clients_response_cancel_ends_the_response_and_the_rest_of_the_turn_is_not_sent() -> None:
    async def test(app, client):
        ws = await client.ws_connect(
            url("scenario=flood&mb=5&seconds=1&hangup=0.1"),
            protocols=["realtime", f"openai-insecure-api-key.{token(app)}"],
        )
        await raw_events(ws, "session.created")
        await ws.send_str(SESSION_UPDATE)
        created = (await raw_events(ws, "response.created"))[-1]
        await raw_events(ws, "response.output_audio.delta")
        await ws.send_str(json.dumps({"type": "response.cancel", "response_id": created["response"]["id"]}))
        done = (await raw_events(ws, "response.done"))[-1]
        t0 = asyncio.get_running_loop().time()
        stats = await (await client.get("/stats")).json()  # the server stays responsive meanwhile
        waited = asyncio.get_running_loop().time() - t0
        while (await ws.receive()).type != WSMsgType.CLOSE:
            pass
        return done, waited, stats, await closed_stats(client)

    done, waited, live, st = with_app(test)
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert waited < 0.5 and live["connections"][-1]["open"]
    assert st["audio_samples_sent"] < 5_000_000 // 2 and st["emulation"]["cancels"] == [
        {"response_id": done["response"]["id"], "active": True}
    ]
    assert st["errors"] == []


def test_what_a_hostile_client_makes_the_server_record_stays_bounded() -> None:
    async def test(app, client):
        ws = await client.ws_connect(
            url("scenario=flood&mb=0.0096&hangup=5"), protocols=["realtime", f"openai-insecure-api-key.{token(app)}"]
        )
        await raw_events(ws, "session.created")
        await ws.send_str(SESSION_UPDATE)
        await raw_events(ws, "response.done")
        for i in range(300):
            await ws.send_str(json.dumps({"type": f"made.up.{i}"}))
            truncate = {"type": "conversation.item.truncate", "item_id": f"item_{i}" * 50, "audio_end_ms": i}
            await ws.send_str(json.dumps(truncate))
        for _ in range(600):
            assert (await ws.receive()).type == WSMsgType.TEXT
        stats = await (await client.get("/stats")).json()
        await ws.close()
        return stats["connections"][-1]

    st = with_app(test)
    emu = st["emulation"]
    assert st["errors_count"] == 600 and len(st["errors"]) == 50
    assert len(emu["truncates"]) == 50 and emu["truncates_bad"] == 300
    assert len(emu["client_messages"]) <= 65 and emu["client_messages"]["other"] > 200
    assert len(json.dumps(st)) < 200_000


def test_drop_after_aborts_the_connection_as_on_ws() -> None:
    async def test(app, client):
        r = await converse(
            client, url("scenario=chat&turns=2&tokens=30&burst=0&pause=0&drop_after=20"), OPENAI, token=token(app)
        )
        return r, await closed_stats(client)

    r, st = with_app(test)
    assert r.close_code == 1006 == st["close_code"] and st["dropped"] and st["frames_sent"] == 20
    assert st["errors"] == ["dropped on purpose after 20 frames (drop_after)"]


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def test_a_new_session_after_a_cut_answer_waits_for_the_clients_response_create() -> None:
    """As the service: a new session never speaks first. The conversation replayed after a
    session lost mid-response is answered when the client asks (response.create); without
    the request the scripted turn goes on once the client stops making progress."""
    query = "scenario=chat&turns=3&tokens=20&burst=0&pause=0"

    async def new_session(client, app, items: list[dict[str, Any]], extra: str = ""):
        protocols = ["realtime", f"openai-insecure-api-key.{token(app)}"]
        ws = await client.ws_connect(url(query + extra), protocols=protocols)
        await raw_events(ws, "session.created")
        for item in items:
            await ws.send_str(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send_str(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
        await raw_events(ws, "session.updated")
        return ws

    async def test(app, client):
        first = await new_session(client, app, [])
        turn1 = await raw_events(first, "response.done")
        await answer_calls(first, turn1)
        cut = (await raw_events(first, "response.output_text.delta"))[-1]["delta"]  # the loss cuts this answer
        first._response.connection.transport.abort()  # a lost network: no closing handshake
        await closed_stats(client, 1)
        done = [e["item"] for e in turn1 if e["type"] == "response.output_item.done" and e["item"]["type"] == "message"]
        replay = [
            {"type": "message", "role": "assistant", "id": i["id"], "content": [{"type": "output_text", "text": t}]}
            for i, t in [(done[-1], _text(turn1))]
        ]
        second = await new_session(client, app, replay)
        held = await record_when(client, 2, lambda st: st["emulation"]["waiting_for_create"])
        await second.send_str(json.dumps({"type": "response.create"}))
        answer = await raw_events(second, "response.done")
        await second.close()
        return held, await closed_stats(client, 2), answer, cut

    held, st, answer, cut = with_app(test)
    # session.created, the replayed item (added, done), session.updated: no response unasked
    assert held["emulation"]["responses"] == 0 and held["frames_sent"] == 4
    assert st["emulation"]["answers_asked_again"] == 1 and st["emulation"]["answers_not_asked"] == 0
    assert st["emulation"]["skipped_turns"] == 1 and answer[0]["response"]["status"] == "in_progress"
    assert _text(answer).startswith(cut), "the answer the loss cut short, from its start"
    assert not any("skipped turn" in e or "response.create" in e for e in st["errors"]), st["errors"]
