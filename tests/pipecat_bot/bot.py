"""A real, local, deterministic Pipecat bot (pipecat-ai 1.14.0) for end-to-end tests.

Run it from the repository root::

    python -m tests.pipecat_bot --port P --stats-port Q --origin http://127.0.0.1:R

It serves ``ws://127.0.0.1:P`` with pipecat's ``SingleClientWebsocketServerTransport`` and
``ProtobufFrameSerializer`` (binary websocket messages, schema ``pipecat/frames/frames.proto``),
refuses any handshake whose ``Origin`` is not one of the ``--origin`` values (HTTP 403), runs RTVI
(added by ``PipelineWorker`` itself), and prints one line ``READY`` on stdout once it listens.
Its pipeline is ``[transport.input(), ScriptedBot, transport.output()]``: no cloud service, no
key, no network.

What it does, for each RTVI ``send-text`` (any content, any options) received after the
client's ``client-ready``, as one bot turn:

1. "LLM" text: ``LLMFullResponseStartFrame``, the 30 ``TOKENS`` as ``LLMTextFrame`` (one every
   ``--token-interval`` s), ``LLMFullResponseEndFrame``. RTVI turns them into ``bot-llm-started``,
   one ``bot-llm-text`` per token, ``bot-llm-stopped``. The same words also go out, sentence by
   sentence, as the deprecated ``bot-transcription`` (RTVI sends it whenever the text so far ends
   a sentence; it cannot be turned off apart from ``bot-llm-text``): a client renders
   ``bot-llm-text`` only. There is no ``bot-tts-text`` or ``bot-output``: they come only from
   ``TTSTextFrame``/``AggregatedTextFrame``, which this bot's "TTS" does not produce.
2. "TTS" segment 1: ``TTSStartedFrame``, ``--tts-seconds`` of PCM16 mono 24 kHz tone (220 Hz and
   harmonics) as 20 ms ``TTSAudioRawFrame``s pushed faster than real time like a real TTS,
   ``TTSStoppedFrame``. The output transport paces it to real time and re-chunks it to 40 ms
   ``AudioRawFrame`` protobuf messages.
3. Once segment 1 is all on the wire and the bot stopped speaking, a client-side tool call:
   ``FunctionCallsStartedFrame`` and ``FunctionCallInProgressFrame`` for ``calculator`` with
   ``{"expression": "17 * 23"}``, inside ``LLMFullResponseStartFrame``/``EndFrame`` (RTVI
   ``bot-llm-started``, ``llm-function-call-started``, ``llm-function-call-in-progress``,
   ``bot-llm-stopped``; the report level is FULL so name, arguments and result are visible).
   The bot waits (``--tool-timeout``) for the client's ``llm-function-call-result`` with that
   ``tool_call_id`` (RTVI echoes it as ``llm-function-call-stopped``) and records whether its
   result is 391.
4. "TTS" segment 2: ``TTSStartedFrame`` and ``--tts-seconds`` of a 330 Hz tone, and, once
   ``--barge-in-seconds`` of it are on the wire, a barge-in as pipecat's user turn processor makes
   one: ``UserStartedSpeakingFrame`` broadcast, then ``broadcast_interruption()`` (the transport
   sends an ``InterruptionFrame`` protobuf message and drops the audio still queued; RTVI sends
   ``user-started-speaking`` and ``bot-interrupted``, then ``bot-stopped-speaking``), and
   ``--user-speech-seconds`` later ``UserStoppedSpeakingFrame`` (``user-stopped-speaking``).
   No ``TTSStoppedFrame`` for an interrupted segment, as with pipecat's own TTS services.

Note that RTVI's ``send-text`` (``run_immediately`` defaults to true) interrupts the pipeline
before the turn starts, so every turn begins with an ``InterruptionFrame`` protobuf message and a
``bot-interrupted`` before ``bot-llm-started``.

Microphone: ``AudioRawFrame`` protobuf messages from the client become ``InputAudioRawFrame``s;
the bot counts their samples, sample rates and channel counts.

``GET http://127.0.0.1:Q/stats`` returns the counters of the current (or last) client session as
JSON; they are reset when a client connects. Everything sent is counted from the serializer's
output, i.e. the exact bytes handed to the websocket: ``audio.sha256`` is the sha256 of the
concatenated ``AudioRawFrame.audio`` bytes (PCM16LE) of every audio message sent, in order.

One client at a time (pipecat closes a second one with 1013); after it disconnects, the turn in
progress is cancelled and the next client gets a fresh session.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pipecat
import pipecat.frames.protobufs.frames_pb2 as frames_pb2
from aiohttp import web
from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FunctionCallFromLLM,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    LLMConfigureOutputFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.processors.frameworks.rtvi.frames import RTVISendTextFrame
from pipecat.processors.frameworks.rtvi.observer import RTVIFunctionCallReportLevel, RTVIObserverParams
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.transports.websocket.server import (
    SingleClientWebsocketServerParams,
    SingleClientWebsocketServerTransport,
)
from pipecat.workers.runner import WorkerRunner

from devserver.stats import pcm_checksum

from .script import (
    IN_SAMPLE_RATE,
    OUT_SAMPLE_RATE,
    SEGMENT_FREQUENCIES_HZ,
    TOKENS,
    TOOL_ARGUMENTS,
    TOOL_EXPECTED,
    TOOL_NAME,
    TTS_FRAME_SAMPLES,
)

# Bounds on everything the stats keep.
MAX_TEXT_CHARS = 100_000
MAX_PCM_BYTES = 16 * 1024 * 1024  # about 5.8 minutes at 24 kHz: kept for /ring_checksum
MAX_LIST = 64
MAX_EXAMPLE_CHARS = 4000
MAX_RATES = 16
MAX_TURNS = 16


def tone(frequency: float, seconds: float, *, rate: int = OUT_SAMPLE_RATE, fade_out: bool = True) -> bytes:
    """PCM16LE mono: a fundamental with two harmonics, 10 ms fade in (and out), deterministic."""
    n = round(seconds * rate)
    t = np.arange(n, dtype=np.float64) / rate
    wave = (
        0.5 * np.sin(2 * math.pi * frequency * t)
        + 0.25 * np.sin(2 * math.pi * 2 * frequency * t)
        + 0.125 * np.sin(2 * math.pi * 3 * frequency * t)
    )
    envelope = np.ones(n)
    ramp = min(n, rate // 100)
    envelope[:ramp] = np.linspace(0.0, 1.0, ramp, endpoint=False)
    if fade_out:
        envelope[n - ramp :] = np.linspace(1.0, 0.0, ramp)
    pcm = np.round(wave * envelope * (0.4 * 32767 / 0.875)).astype("<i2")
    return pcm.tobytes()


def result_matches(result: Any) -> bool:
    """Whether a tool result says 391: ``"391"``, ``391``, or a dict with such a value."""

    def is_expected(value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, int | float):
            return value == TOOL_EXPECTED
        if isinstance(value, str):
            try:
                return float(value.strip()) == TOOL_EXPECTED
            except ValueError:
                return False
        return False

    if isinstance(result, dict):
        return any(is_expected(v) for v in result.values())
    return is_expected(result)


def _append(items: list, item: Any, limit: int = MAX_LIST) -> bool:
    if len(items) >= limit:
        return False
    items.append(item)
    return True


def _example(message: dict) -> Any:
    text = json.dumps(message, ensure_ascii=False)
    if len(text) <= MAX_EXAMPLE_CHARS:
        return message
    return {"truncated": text[:MAX_EXAMPLE_CHARS]}


class Stats:
    """Bot-side counters of one client session, all bounded."""

    def __init__(self) -> None:
        self.session = 0
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self.reset(connected=False)

    def reset(self, *, connected: bool) -> None:
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters = []
        self.connected = connected
        self.client_ready_received = 0
        self.client_ready_versions: list[Any] = []
        self.rtvi_received: Counter[str] = Counter()
        self.rtvi_received_examples: dict[str, Any] = {}
        self.rtvi_sent: Counter[str] = Counter()
        self.rtvi_sent_examples: dict[str, Any] = {}
        self.other_sent: Counter[str] = Counter()
        self.text = ""
        self.text_truncated = False
        self._text_hash = hashlib.sha256()
        self.text_tokens = 0
        self.wire_bot_llm_text = ""
        self.audio_samples = 0
        self.audio_frames = 0
        self.audio_bytes = 0
        self._audio_hash = hashlib.sha256()
        self.audio_pcm = bytearray()  # every PCM byte sent (bounded): for ring_checksum()
        self.audio_formats: list[list[int]] = []
        self.interruptions: list[dict] = []
        self.pending_barge_in: dict | None = None
        self.turns: list[dict] = []
        self.tool_results: list[dict] = []
        self.mic_samples = 0
        self.mic_frames = 0
        self.mic_bytes = 0
        self.mic_rates: list[int] = []
        self.mic_channels: list[int] = []
        self.errors: list[str] = []
        self.errors_dropped = 0

    # -- recording --

    def error(self, message: str) -> None:
        logger.warning(f"pipecat_bot: {message}")
        if not _append(self.errors, message[:1000]):
            self.errors_dropped += 1

    def add_text(self, token: str) -> None:
        self.text_tokens += 1
        self._text_hash.update(token.encode())
        if len(self.text) + len(token) <= MAX_TEXT_CHARS:
            self.text += token
        else:
            self.text_truncated = True

    def mic(self, frame: InputAudioRawFrame) -> None:
        self.mic_frames += 1
        self.mic_bytes += len(frame.audio)
        self.mic_samples += frame.num_frames
        if frame.sample_rate not in self.mic_rates:
            _append(self.mic_rates, frame.sample_rate, MAX_RATES)
        if frame.num_channels not in self.mic_channels:
            _append(self.mic_channels, frame.num_channels, MAX_RATES)

    def received(self, frame: Frame | None) -> None:
        """A frame the serializer made of a client message."""
        if not self.connected or not isinstance(frame, InputTransportMessageFrame):
            return
        message = frame.message
        kind = str(message.get("type")) if isinstance(message, dict) else "?"
        if len(self.rtvi_received) < MAX_LIST or kind in self.rtvi_received:
            self.rtvi_received[kind] += 1
        if kind not in self.rtvi_received_examples and len(self.rtvi_received_examples) < MAX_LIST:
            self.rtvi_received_examples[kind] = _example(message)
        if kind == "client-ready":
            self.client_ready_received += 1
            data = message.get("data") or {}
            _append(self.client_ready_versions, data.get("version") if isinstance(data, dict) else None)

    def sent(self, payload: bytes) -> None:
        """Bytes the serializer handed to the websocket, parsed back."""
        if not self.connected:
            return
        proto = frames_pb2.Frame.FromString(payload)
        which = proto.WhichOneof("frame")
        if which == "audio":
            audio = proto.audio
            channels = max(1, audio.num_channels)
            self.audio_frames += 1
            self.audio_bytes += len(audio.audio)
            self.audio_samples += len(audio.audio) // (2 * channels)
            self._audio_hash.update(audio.audio)
            if len(self.audio_pcm) + len(audio.audio) <= MAX_PCM_BYTES:
                self.audio_pcm += audio.audio
            fmt = [audio.sample_rate, audio.num_channels]
            if fmt not in self.audio_formats:
                _append(self.audio_formats, fmt, MAX_RATES)
            self._wake()
        elif which == "message":
            try:
                message = json.loads(proto.message.data)
            except ValueError:
                self.error(f"sent a MessageFrame that is not JSON: {proto.message.data[:200]!r}")
                return
            kind = str(message.get("type")) if isinstance(message, dict) else "?"
            if len(self.rtvi_sent) < MAX_LIST or kind in self.rtvi_sent:
                self.rtvi_sent[kind] += 1
            if kind not in self.rtvi_sent_examples and len(self.rtvi_sent_examples) < MAX_LIST:
                self.rtvi_sent_examples[kind] = _example(message)
            if kind == "bot-llm-text":
                text = message["data"]["text"]
                if len(self.wire_bot_llm_text) + len(text) <= MAX_TEXT_CHARS:
                    self.wire_bot_llm_text += text
            elif kind in ("error", "error-response"):
                self.error(f"sent RTVI {kind}: {json.dumps(message.get('data'), ensure_ascii=False)}")
        elif which == "interruption":
            record = {"index": len(self.interruptions), "audio_samples_sent_before": self.audio_samples}
            _append(self.interruptions, record)
            if self.pending_barge_in is not None:
                barge_in = self.pending_barge_in
                self.pending_barge_in = None
                barge_in["wire_interruption_index"] = record["index"]
                barge_in["audio_samples_sent_before"] = self.audio_samples
                barge_in["segment_samples_sent_before"] = self.audio_samples - barge_in["segment_base_samples"]
        else:
            self.other_sent[str(which)] += 1

    # -- waiting on the wire --

    def _wake(self) -> None:
        still = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if self.audio_samples >= target:
                fut.set_result(None)
            else:
                still.append((target, fut))
        self._waiters = still

    async def wait_audio_samples(self, target: int, timeout: float) -> None:
        """Wait until ``target`` audio samples in all have been sent in this session."""
        if self.audio_samples >= target:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        await asyncio.wait_for(fut, timeout)

    # -- reporting --

    def snapshot(self) -> dict:
        return {
            "pipecat_version": pipecat.version(),
            "session": self.session,
            "connected": self.connected,
            "client_ready_received": self.client_ready_received,
            "client_ready_versions": self.client_ready_versions,
            "rtvi_received": dict(self.rtvi_received),
            "rtvi_received_examples": self.rtvi_received_examples,
            "rtvi_sent": dict(self.rtvi_sent),
            "rtvi_sent_examples": self.rtvi_sent_examples,
            "other_sent": dict(self.other_sent),
            "text": {
                "sent": self.text,
                "sha256": self._text_hash.hexdigest(),
                "tokens": self.text_tokens,
                "truncated": self.text_truncated,
                "wire_bot_llm_text": self.wire_bot_llm_text,
            },
            "audio": {
                "samples_sent": self.audio_samples,
                "frames_sent": self.audio_frames,
                "bytes_sent": self.audio_bytes,
                "sha256": self._audio_hash.hexdigest(),
                "checksum": "sha256 of the concatenated AudioRawFrame.audio bytes (PCM16LE) of every audio "
                "message sent in this session, in order",
                "formats": self.audio_formats,
            },
            "tool_results": self.tool_results,
            "interruptions": self.interruptions,
            "turns": self.turns,
            "mic": {
                "samples": self.mic_samples,
                "frames": self.mic_frames,
                "bytes": self.mic_bytes,
                "sample_rates": self.mic_rates,
                "num_channels": self.mic_channels,
            },
            "errors": self.errors,
            "errors_dropped": self.errors_dropped,
        }


class RecordingProtobufSerializer(ProtobufFrameSerializer):
    """Pipecat's protobuf serializer, recording into ``Stats`` exactly what it produces and parses."""

    def __init__(self, stats: Stats):
        super().__init__()
        self._stats = stats

    async def serialize(self, frame: Frame) -> str | bytes | None:
        payload = await super().serialize(frame)
        if isinstance(payload, bytes):
            try:
                self._stats.sent(payload)
            except Exception as e:  # the stats must never break the bot
                self._stats.error(f"recording a sent frame failed: {e!r}")
        return payload

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            frame = await super().deserialize(data)
        except Exception as e:
            self._stats.error(f"could not deserialize a client message: {e!r}")
            raise
        if frame is None:
            self._stats.error(f"client message not deserializable: {data[:64]!r}")
        self._stats.received(frame)
        return frame


@dataclass
class BotConfig:
    tts_seconds: float = 2.0
    barge_in_seconds: float = 1.0
    user_speech_seconds: float = 0.4
    token_interval: float = 0.02
    tool_timeout: float = 60.0
    wire_timeout: float = 60.0


class ScriptedBot(FrameProcessor):
    """Stands in for LLM and TTS: answers each send-text with the scripted turn (module docstring)."""

    def __init__(self, stats: Stats, config: BotConfig, **kwargs):
        super().__init__(name="ScriptedBot", **kwargs)
        self._stats = stats
        self._config = config
        self._client_ready = False
        self._turn_no = 0
        self._turn_task: asyncio.Task | None = None
        self._tool_waiters: dict[str, asyncio.Future] = {}
        # Set by the output transport's BotStoppedSpeakingFrame (its upstream copy reaches us).
        self._bot_quiet = asyncio.Event()
        self._bot_quiet.set()

    def can_generate_metrics(self) -> bool:
        return True

    # -- session --

    def start_session(self) -> None:
        self._client_ready = False
        self._turn_no = 0

    async def end_session(self) -> None:
        self._client_ready = False
        await self._cancel_turn("client disconnected")

    async def cleanup(self) -> None:
        await self._cancel_turn("bot stopping")
        await super().cleanup()

    # -- frames --

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)

        if isinstance(frame, InputAudioRawFrame):
            self._stats.mic(frame)
            return
        if isinstance(frame, InputTransportMessageFrame) and direction == FrameDirection.DOWNSTREAM:
            # The input transport broadcasts each client message; the RTVIProcessor upstream of
            # the input transport handles it, this copy only tells us the client is ready.
            message = frame.message
            if isinstance(message, dict) and message.get("type") == "client-ready":
                self._client_ready = True
        elif isinstance(frame, RTVISendTextFrame):
            await self._on_send_text(frame)
            return
        elif isinstance(frame, LLMMessagesAppendFrame | LLMConfigureOutputFrame):
            return  # this processor is the "LLM": it takes these
        elif isinstance(frame, FunctionCallResultFrame):
            self._on_tool_result(frame)
            return
        elif isinstance(frame, BotStartedSpeakingFrame) and direction == FrameDirection.UPSTREAM:
            self._bot_quiet.clear()
        elif isinstance(frame, BotStoppedSpeakingFrame) and direction == FrameDirection.UPSTREAM:
            self._bot_quiet.set()
        elif isinstance(frame, InterruptionFrame) and direction == FrameDirection.DOWNSTREAM:
            # Someone else interrupted (e.g. send-text with run_immediately): stop, like an LLM would.
            await self._cancel_turn("interrupted from upstream")

        await self.push_frame(frame, direction)

    async def _on_send_text(self, frame: RTVISendTextFrame) -> None:
        if not self._client_ready:
            self._stats.error("send-text before client-ready: ignored")
            return
        await self._cancel_turn("new send-text")
        self._turn_no += 1
        record = {
            "turn": self._turn_no,
            "send_text": frame.text[:200],
            "completed": False,
            "cancelled": None,
            "segments": [],
            "tool_call": None,
            "barge_in": None,
        }
        if not _append(self._stats.turns, record, MAX_TURNS):
            self._stats.turns.pop(0)
            self._stats.turns.append(record)
        self._turn_task = self.create_task(self._run_turn(record), f"turn-{self._turn_no}")

    def _on_tool_result(self, frame: FunctionCallResultFrame) -> None:
        entry = {
            "tool_call_id": frame.tool_call_id,
            "function_name": frame.function_name,
            "arguments": frame.arguments,
            "result": frame.result,
            "matched": result_matches(frame.result),
            "known_call": frame.tool_call_id in self._tool_waiters,
        }
        _append(self._stats.tool_results, entry)
        fut = self._tool_waiters.get(frame.tool_call_id)
        if fut is None:
            self._stats.error(f"tool result for an unknown call {frame.tool_call_id!r}")
        elif not fut.done():
            fut.set_result(frame)

    async def _cancel_turn(self, reason: str) -> None:
        task, self._turn_task = self._turn_task, None
        if task and not task.done():
            if self._stats.turns and self._stats.turns[-1]["cancelled"] is None:
                self._stats.turns[-1]["cancelled"] = reason
            await self.cancel_task(task)

    # -- the turn --

    async def _run_turn(self, record: dict) -> None:
        try:
            await self._turn(record)
            record["completed"] = True
        except TimeoutError as e:
            self._stats.error(f"turn {record['turn']}: timed out: {e!r}")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            logger.exception("pipecat_bot: turn failed")
            self._stats.error(f"turn {record['turn']} failed: {e!r}")

    async def _speak(self, record: dict, segment: int, pcm: bytes, *, stop: bool) -> int:
        """Push one "TTS" segment; returns the session's audio sample count it starts at."""
        context_id = f"turn{record['turn']}-segment{segment}"
        base = self._stats.audio_samples
        record["segments"].append(
            {
                "segment": segment,
                "context_id": context_id,
                "frequency_hz": SEGMENT_FREQUENCIES_HZ[segment - 1],
                "generated_samples": len(pcm) // 2,
                "generated_sha256": hashlib.sha256(pcm).hexdigest(),
                "session_samples_before": base,
            }
        )
        self._bot_quiet.clear()
        await self.push_frame(TTSStartedFrame(context_id=context_id))
        step = TTS_FRAME_SAMPLES * 2
        for offset in range(0, len(pcm), step):
            chunk = pcm[offset : offset + step]
            await self.push_frame(TTSAudioRawFrame(chunk, OUT_SAMPLE_RATE, 1, context_id=context_id))
            await asyncio.sleep(0)
        if stop:
            await self.push_frame(TTSStoppedFrame(context_id=context_id))
        return base

    async def _turn(self, record: dict) -> None:
        config = self._config
        stats = self._stats

        # 1. The "LLM" answer.
        await self.start_ttfb_metrics()
        await self.push_frame(LLMFullResponseStartFrame())
        for i, token in enumerate(TOKENS):
            if i == 0:
                await self.stop_ttfb_metrics()
            await self.push_frame(LLMTextFrame(token))
            stats.add_text(token)
            await asyncio.sleep(config.token_interval)
        await self.push_frame(LLMFullResponseEndFrame())

        # 2. "TTS" segment 1, all of it, until the output transport says the bot stopped speaking.
        pcm = tone(SEGMENT_FREQUENCIES_HZ[0], config.tts_seconds)
        base = await self._speak(record, 1, pcm, stop=True)
        await stats.wait_audio_samples(base + len(pcm) // 2, config.wire_timeout)
        await asyncio.wait_for(self._bot_quiet.wait(), config.wire_timeout)

        # 3. A client-side tool call.
        call_id = f"call_{TOOL_NAME}_{stats.session}_{record['turn']}"
        call = {"tool_call_id": call_id, "function_name": TOOL_NAME, "arguments": TOOL_ARGUMENTS}
        record["tool_call"] = {**call, "result": None, "matched": None}
        fut = asyncio.get_running_loop().create_future()
        self._tool_waiters[call_id] = fut
        try:
            await self.push_frame(LLMFullResponseStartFrame())
            await self.push_frame(
                FunctionCallsStartedFrame(
                    function_calls=[
                        FunctionCallFromLLM(
                            function_name=TOOL_NAME, tool_call_id=call_id, arguments=TOOL_ARGUMENTS, context=None
                        )
                    ]
                )
            )
            await self.push_frame(
                FunctionCallInProgressFrame(
                    function_name=TOOL_NAME,
                    tool_call_id=call_id,
                    arguments=TOOL_ARGUMENTS,
                    cancel_on_interruption=False,
                )
            )
            await self.push_frame(LLMFullResponseEndFrame())
            try:
                result: FunctionCallResultFrame = await asyncio.wait_for(fut, config.tool_timeout)
                record["tool_call"]["result"] = result.result
                record["tool_call"]["matched"] = result_matches(result.result)
            except TimeoutError:
                stats.error(f"no llm-function-call-result for {call_id} in {config.tool_timeout}s")
        finally:
            self._tool_waiters.pop(call_id, None)

        # 4. "TTS" segment 2, interrupted by a barge-in.
        pcm = tone(SEGMENT_FREQUENCIES_HZ[1], config.tts_seconds, fade_out=False)
        barge_in_samples = round(config.barge_in_seconds * OUT_SAMPLE_RATE)
        if not 0 < barge_in_samples < len(pcm) // 2:
            base = await self._speak(record, 2, pcm, stop=True)
            await stats.wait_audio_samples(base + len(pcm) // 2, config.wire_timeout)
            return
        base = await self._speak(record, 2, pcm, stop=False)
        await stats.wait_audio_samples(base + barge_in_samples, config.wire_timeout)
        barge_in = {
            "segment": 2,
            "segment_base_samples": base,
            "segment_samples_sent_at_decision": stats.audio_samples - base,
            # Filled in when the InterruptionFrame is serialized:
            "wire_interruption_index": None,
            "audio_samples_sent_before": None,
            "segment_samples_sent_before": None,
        }
        record["barge_in"] = barge_in
        stats.pending_barge_in = barge_in
        # What pipecat's user turn processor does when the user starts speaking over the bot.
        await self.broadcast_frame(UserStartedSpeakingFrame)
        await self.broadcast_interruption()
        await asyncio.sleep(config.user_speech_seconds)
        await self.broadcast_frame(UserStoppedSpeakingFrame)


class BotTransport(SingleClientWebsocketServerTransport):
    """Pipecat's transport, starting and ending the bot's sessions before it reads or after it
    stops reading a client's messages (its ``on_client_*`` event handlers run later, as tasks)."""

    def __init__(self, stats: Stats, bot: ScriptedBot, **kwargs):
        super().__init__(**kwargs)
        self._stats = stats
        self._bot = bot

    async def _on_client_connected(self, websocket):
        self._stats.session += 1
        self._stats.reset(connected=True)
        self._bot.start_session()
        await super()._on_client_connected(websocket)

    async def _on_client_disconnected(self, websocket):
        self._stats.connected = False
        await super()._on_client_disconnected(websocket)
        await self._bot.end_session()


async def serve_stats(stats: Stats, host: str, port: int) -> web.AppRunner:
    dumps = functools.partial(json.dumps, ensure_ascii=False)

    async def get_stats(_request: web.Request) -> web.Response:
        return web.json_response(
            stats.snapshot(), dumps=dumps, headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}
        )

    async def get_ring_checksum(request: web.Request) -> web.Response:
        """The player's running checksum (pyclient/browser/js/ring-layout.js) over the first
        ``samples`` samples sent: a client that played that many compares its own with it."""
        try:
            samples = int(request.query["samples"])
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text="samples=N") from None
        if not 0 <= samples * 2 <= len(stats.audio_pcm):
            raise web.HTTPBadRequest(text=f"{samples} samples: {len(stats.audio_pcm) // 2} were recorded")
        checksum = pcm_checksum(0, bytes(stats.audio_pcm[: samples * 2]))
        return web.json_response({"samples": samples, "checksum": checksum}, headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/ring_checksum", get_ring_checksum)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_bot(args: argparse.Namespace) -> None:
    stats = Stats()
    config = BotConfig(
        tts_seconds=args.tts_seconds,
        barge_in_seconds=args.barge_in_seconds,
        user_speech_seconds=args.user_speech_seconds,
        token_interval=args.token_interval,
        tool_timeout=args.tool_timeout,
    )
    stats_runner = await serve_stats(stats, args.host, args.stats_port)
    try:
        bot = ScriptedBot(stats, config)
        transport = BotTransport(
            stats,
            bot,
            params=SingleClientWebsocketServerParams(
                serializer=RecordingProtobufSerializer(stats),
                audio_in_enabled=True,
                audio_in_sample_rate=IN_SAMPLE_RATE,
                audio_out_enabled=True,
                audio_out_sample_rate=OUT_SAMPLE_RATE,
                audio_out_end_silence_secs=0,
                allowed_origins=list(args.origin),
            ),
            host=args.host,
            port=args.port,
        )
        worker = PipelineWorker(
            Pipeline([transport.input(), bot, transport.output()]),
            params=PipelineParams(
                audio_in_sample_rate=IN_SAMPLE_RATE,
                audio_out_sample_rate=OUT_SAMPLE_RATE,
                enable_metrics=True,
            ),
            idle_timeout_secs=None,
            rtvi_observer_params=RTVIObserverParams(
                function_call_report_level={"*": RTVIFunctionCallReportLevel.FULL},
            ),
        )

        @transport.event_handler("on_websocket_ready")
        async def on_websocket_ready(_transport):
            print("READY", flush=True)

        @worker.event_handler("on_pipeline_error")
        async def on_pipeline_error(_worker, frame):
            stats.error(f"pipeline error: {frame.error}")

        runner = WorkerRunner(handle_sigint=True, handle_sigterm=True)
        await runner.add_workers(worker)
        await runner.run()
    finally:
        await stats_runner.cleanup()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.pipecat_bot", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="websocket port")
    p.add_argument("--stats-port", type=int, required=True, help="port of GET /stats")
    p.add_argument(
        "--origin", action="append", required=True, help="allowed Origin of the websocket handshake (repeatable)"
    )
    p.add_argument("--tts-seconds", type=float, default=2.0, help="length of each audio segment")
    p.add_argument("--barge-in-seconds", type=float, default=1.0, help="audio of segment 2 sent before the barge-in")
    p.add_argument("--user-speech-seconds", type=float, default=0.4, help="user-started to user-stopped speaking")
    p.add_argument("--token-interval", type=float, default=0.02, help="seconds between LLM tokens")
    p.add_argument("--tool-timeout", type=float, default=60.0, help="seconds to wait for the tool result")
    p.add_argument("--log-level", default="INFO", help="loguru level for stderr")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    asyncio.run(run_bot(args))
