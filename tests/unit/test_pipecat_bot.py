"""The local Pipecat bot (``python -m tests.pipecat_bot``), talked to over its websocket in CPython.

Frames are built and parsed with pipecat's own generated protobuf module, the reference the
client's decoder is tested against. What the client receives is compared with what the bot says,
at ``GET /stats``, it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.pipecat_bot.harness import PIPECAT_MISSING, BotProcess, free_port, load_frames_pb2, start_bot
from tests.pipecat_bot.script import OUT_SAMPLE_RATE, TEXT, TOOL_ARGUMENTS, TOOL_NAME

from .aio import run

frames_pb2 = load_frames_pb2()
pytestmark = pytest.mark.skipif(frames_pb2 is None, reason=PIPECAT_MISSING)
if frames_pb2 is not None:  # pipecat's dependencies
    from websockets import exceptions as ws_exceptions
    from websockets.asyncio import client as ws_client

WAIT = 60.0  # seconds, for every condition: 2 busy cores, another test run going on
RTVI_VERSION = "2.2.0"
MIC_RATE = 16000
MIC_FRAME_SAMPLES = 320  # 20 ms at 16 kHz
MIC_FRAMES = 5
CHUNK_SAMPLES = OUT_SAMPLE_RATE // 25  # the output transport's 40 ms chunks
TTS_SECONDS = 2.0
BARGE_IN_SECONDS = 1.0


@pytest.fixture(scope="module")
def bot() -> Iterator[BotProcess]:
    b = start_bot(
        origin=f"http://127.0.0.1:{free_port()}",
        extra_args=("--tts-seconds", str(TTS_SECONDS), "--barge-in-seconds", str(BARGE_IN_SECONDS)),
    )
    yield b
    b.stop()


# -- a minimal client on pipecat's own protobuf module --


def rtvi(kind: str, msg_id: str, data: dict | None = None) -> bytes:
    message: dict[str, Any] = {"label": "rtvi-ai", "type": kind, "id": msg_id}
    if data is not None:
        message["data"] = data
    frame = frames_pb2.Frame()
    frame.message.data = json.dumps(message)
    return frame.SerializeToString()


def mic_frame(samples: list[int]) -> bytes:
    frame = frames_pb2.Frame()
    frame.audio.audio = struct.pack(f"<{len(samples)}h", *samples)
    frame.audio.sample_rate = MIC_RATE
    frame.audio.num_channels = 1
    return frame.SerializeToString()


@dataclass
class Received:
    """Everything one client session received, in order."""

    events: list[tuple] = field(default_factory=list)  # ("audio", samples, rate, channels) | ("rtvi", msg) | ...
    audio_samples: int = 0
    audio_hash: Any = field(default_factory=hashlib.sha256)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def rtvi(self, kind: str) -> list[dict]:
        return [e[1] for e in self.events if e[0] == "rtvi" and e[1].get("type") == kind]

    def index(self, pred: Callable[[tuple], bool], start: int = 0) -> int:
        for i in range(start, len(self.events)):
            if pred(self.events[i]):
                return i
        return -1

    def audio_before(self, index: int) -> int:
        return sum(e[1] for e in self.events[:index] if e[0] == "audio")

    async def wait(self, pred: Callable[[], bool], what: str) -> None:
        deadline = asyncio.get_running_loop().time() + WAIT
        while not pred():
            if self.closed:
                raise AssertionError(f"connection closed while waiting for {what}; {self.summary()}")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no {what} in {WAIT}s; {self.summary()}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def summary(self) -> str:
        kinds = [e[1]["type"] if e[0] == "rtvi" else e[0] for e in self.events]
        return f"received {len(kinds)} messages, audio {self.audio_samples} samples: {compact(kinds)[-60:]}"


def compact(kinds: list[str]) -> list[str]:
    """Runs of the same kind as 'kind xN'."""
    out: list[str] = []
    for k in kinds:
        if out and (out[-1] == k or out[-1].startswith(k + " x")):
            n = int(out[-1].split(" x")[1]) + 1 if " x" in out[-1] else 2
            out[-1] = f"{k} x{n}"
        else:
            out.append(k)
    return out


async def receive(ws, got: Received) -> None:
    try:
        async for data in ws:
            assert isinstance(data, bytes), f"a text websocket message: {data!r}"
            frame = frames_pb2.Frame.FromString(data)
            which = frame.WhichOneof("frame")
            if which == "audio":
                a = frame.audio
                n = len(a.audio) // (2 * max(1, a.num_channels))
                got.audio_samples += n
                got.audio_hash.update(a.audio)
                got.events.append(("audio", n, a.sample_rate, a.num_channels, a.HasField("pts")))
            elif which == "message":
                got.events.append(("rtvi", json.loads(frame.message.data)))
            elif which == "interruption":
                got.events.append(("interruption", frame.interruption.id, frame.interruption.name))
            else:
                got.events.append((str(which), frame))
            got.changed.set()
    except ws_exceptions.ConnectionClosed:
        pass
    finally:
        got.closed = True
        got.changed.set()


async def get_stats(http, url: str) -> dict:
    async with http.get(url) as r:
        assert r.status == 200
        return await r.json()


async def wait_stats(http, url: str, pred: Callable[[dict], bool], what: str) -> dict:
    deadline = time.monotonic() + WAIT
    while True:
        stats = await get_stats(http, url)
        if pred(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"bot stats never showed {what} in {WAIT}s: {json.dumps(stats)[:3000]}")
        await asyncio.sleep(0.05)  # polling another process for a condition


def sine(n: int, start: int) -> list[int]:
    return [round(8000 * math.sin(2 * math.pi * 440 * (start + i) / MIC_RATE)) for i in range(n)]


# -- the tests --


def test_a_turn_end_to_end(bot: BotProcess) -> None:
    run(_a_turn(bot))


async def _a_turn(bot: BotProcess) -> None:
    got = Received()
    async with aiohttp.ClientSession() as http:
        async with ws_client.connect(bot.ws_url, origin=bot.origin, max_size=None) as ws:
            reader = asyncio.create_task(receive(ws, got))
            stats = await wait_stats(http, bot.stats_url + "/stats", lambda s: s["connected"], "the client connected")
            session = stats["session"]

            await ws.send(
                rtvi("client-ready", "cr-1", {"version": RTVI_VERSION, "about": {"library": "pyclient-test"}})
            )
            await got.wait(lambda: got.rtvi("bot-ready"), "bot-ready")
            await ws.send(rtvi("send-text", "st-1", {"content": "What is 17 times 23?"}))

            await got.wait(lambda: got.rtvi("llm-function-call-in-progress"), "llm-function-call-in-progress")
            call = got.rtvi("llm-function-call-in-progress")[0]["data"]
            assert call["function_name"] == TOOL_NAME
            assert call["arguments"] == TOOL_ARGUMENTS
            audio_before_call = got.audio_samples
            await ws.send(
                rtvi(
                    "llm-function-call-result",
                    "fr-1",
                    {
                        "function_name": call["function_name"],
                        "tool_call_id": call["tool_call_id"],
                        "arguments": call["arguments"],
                        "result": {"result": 391},
                    },
                )
            )

            # The barge-in: an InterruptionFrame after audio that came after the tool result,
            # then user-stopped-speaking.
            def barged_in() -> bool:
                marks = [i for i, e in enumerate(got.events) if e[0] == "interruption"]
                return (
                    bool(marks)
                    and got.audio_before(marks[-1]) > audio_before_call
                    and bool(got.rtvi("user-stopped-speaking"))
                )

            await got.wait(barged_in, "interruption after the tool result")

            for k in range(MIC_FRAMES):
                await ws.send(mic_frame(sine(MIC_FRAME_SAMPLES, k * MIC_FRAME_SAMPLES)))
            mic_total = MIC_FRAMES * MIC_FRAME_SAMPLES

            stats = await wait_stats(
                http,
                bot.stats_url + "/stats",
                lambda s: s["mic"]["samples"] >= mic_total and s["turns"] and s["turns"][-1]["completed"],
                "the mic audio and the turn completed",
            )
            # Everything the bot sent has arrived once the client has as much audio as it sent.
            sent_samples = stats["audio"]["samples_sent"]
            await got.wait(lambda: got.audio_samples >= sent_samples, f"{sent_samples} audio samples")

            # A second client while this one is connected: closed with 1013.
            async with ws_client.connect(bot.ws_url, origin=bot.origin) as second:
                with pytest.raises(ws_exceptions.ConnectionClosed) as closed:
                    await asyncio.wait_for(second.recv(), WAIT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013

            stats = await get_stats(http, bot.stats_url + "/stats")
            await ws.close()
            await reader

        # After the client has gone, the bot takes a new one, with fresh stats.
        await wait_stats(http, bot.stats_url + "/stats", lambda s: not s["connected"], "the client disconnected")
        again = Received()
        async with ws_client.connect(bot.ws_url, origin=bot.origin) as ws:
            reader = asyncio.create_task(receive(ws, again))
            await ws.send(rtvi("client-ready", "cr-2", {"version": RTVI_VERSION, "about": {"library": "t"}}))
            await again.wait(lambda: again.rtvi("bot-ready"), "bot-ready on a second session")
            fresh = await wait_stats(
                http, bot.stats_url + "/stats", lambda s: s["client_ready_received"] == 1, "client-ready"
            )
            await ws.close()
            await reader
        assert fresh["session"] == session + 1
        assert fresh["audio"]["samples_sent"] == 0 and fresh["text"]["sent"] == "" and fresh["turns"] == []

    print(json.dumps({"sequence": compact(kind_of(e) for e in got.events), "stats": stats}, ensure_ascii=False))

    # -- what the bot says it did --
    assert stats["session"] == session and stats["errors"] == [], stats["errors"]
    assert stats["client_ready_received"] == 1 and stats["client_ready_versions"] == [RTVI_VERSION]
    turn = stats["turns"][-1]
    assert turn["completed"] and turn["cancelled"] is None, turn

    # bot-ready, answering client-ready.
    ready = got.rtvi("bot-ready")
    assert len(ready) == 1 and ready[0]["id"] == "cr-1" and ready[0]["data"]["version"] == RTVI_VERSION
    assert not got.rtvi("error-response") and not got.rtvi("error")

    # Text: only as RTVI JSON; bot-llm-text carries every token once.
    llm_text = "".join(m["data"]["text"] for m in got.rtvi("bot-llm-text"))
    assert llm_text == TEXT == stats["text"]["sent"] == stats["text"]["wire_bot_llm_text"]
    assert hashlib.sha256(llm_text.encode()).hexdigest() == stats["text"]["sha256"]
    assert len(got.rtvi("bot-llm-text")) == stats["text"]["tokens"] == 30
    # The deprecated bot-transcription repeats the same words sentence by sentence.
    assert "".join(m["data"]["text"] for m in got.rtvi("bot-transcription")) == TEXT
    assert not got.rtvi("bot-tts-text") and not got.rtvi("bot-output")
    assert not [e for e in got.events if e[0] not in ("audio", "rtvi", "interruption")]

    # Audio: what the bot sent, byte for byte, in 40 ms chunks of 24 kHz mono, no pts.
    assert got.audio_samples == stats["audio"]["samples_sent"]
    assert got.audio_hash.hexdigest() == stats["audio"]["sha256"]
    audio = [e for e in got.events if e[0] == "audio"]
    assert {(e[1], e[2], e[3], e[4]) for e in audio} == {(CHUNK_SAMPLES, OUT_SAMPLE_RATE, 1, False)}
    seg = round(TTS_SECONDS * OUT_SAMPLE_RATE)
    barge = round(BARGE_IN_SECONDS * OUT_SAMPLE_RATE)
    assert seg + barge <= got.audio_samples <= seg + barge + 2 * CHUNK_SAMPLES
    assert audio_before_call == seg, "the tool call comes once segment 1 is all sent"

    # The tool call: name and arguments visible, result back at the bot, matched.
    assert stats["tool_results"] == [
        {
            "tool_call_id": call["tool_call_id"],
            "function_name": TOOL_NAME,
            "arguments": TOOL_ARGUMENTS,
            "result": {"result": 391},
            "matched": True,
            "known_call": True,
        }
    ]
    assert turn["tool_call"]["matched"] is True
    stopped = got.rtvi("llm-function-call-stopped")
    assert [m["data"] for m in stopped] == [
        {
            "tool_call_id": call["tool_call_id"],
            "cancelled": False,
            "function_name": TOOL_NAME,
            "result": {"result": 391},
        }
    ]

    # The barge-in: an InterruptionFrame about 1 s into segment 2, where the bot says it was.
    interruptions = [i for i, e in enumerate(got.events) if e[0] == "interruption"]
    barge_in_index = interruptions[-1]
    barge_in = turn["barge_in"]
    assert got.audio_before(barge_in_index) == barge_in["audio_samples_sent_before"]
    assert barge <= barge_in["segment_samples_sent_before"] < seg
    assert got.audio_samples - got.audio_before(barge_in_index) <= CHUNK_SAMPLES, "audio went on after the barge-in"
    assert [i["audio_samples_sent_before"] for i in stats["interruptions"]] == [
        got.audio_before(i) for i in interruptions
    ]
    after = [kind_of(e) for e in got.events[got.index(lambda e: kind_of(e) == "llm-function-call-stopped") :]]
    after = [k for k in after if k != "audio"]
    for kind in ("user-started-speaking", "bot-interrupted", "bot-stopped-speaking", "user-stopped-speaking"):
        assert kind in after, after
    assert after.index("user-started-speaking") < after.index("user-stopped-speaking"), after
    # Segment 1 ends (bot-stopped-speaking) before the tool call.
    kinds = [kind_of(e) for e in got.events]
    assert kinds.index("bot-stopped-speaking") < kinds.index("llm-function-call-started"), compact(kinds)

    # The microphone.
    assert stats["mic"]["samples"] == mic_total
    assert stats["mic"]["sample_rates"] == [MIC_RATE] and stats["mic"]["num_channels"] == [1]


def kind_of(e: tuple) -> str:
    return e[1]["type"] if e[0] == "rtvi" else e[0]


def test_wrong_origin_is_refused(bot: BotProcess) -> None:
    async def attempt(origin: str | None) -> int:
        with pytest.raises(ws_exceptions.InvalidStatus) as refused:
            async with ws_client.connect(bot.ws_url, origin=origin):
                pass
        return refused.value.response.status_code

    assert run(attempt("http://evil.example")) == 403
    assert run(attempt(bot.origin.replace("127.0.0.1", "localhost"))) == 403
    assert run(attempt(None)) == 403
