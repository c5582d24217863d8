"""An emulated OpenAI Realtime server (GA protocol): the socket and the client-secrets endpoint.

Sources (read at the commits named in tests/unit/fixtures/openai_realtime/README.md): openai-node
``src/resources/realtime/realtime.ts`` (every client and server event), ``client-secrets.ts``
(``POST /v1/realtime/client_secrets``), ``src/realtime/websocket.ts`` (URL, subprotocols);
openai-agents-js ``openaiRealtimeEvents.ts``. Behaviour seen on the real service and reported in
issue threads: an unknown key gets an ``error`` ``invalid_api_key`` and a close with 3000
(twilio-samples/speech-assistant-openai-realtime-api-python#4); the beta shape gets
``beta_api_shape_disabled`` and a close with 4000; the session limit gets ``session_expired``
("Your session hit the maximum duration of 60 minutes.") and a close with 1001
(pollen-robotics/reachy_mini_conversation_app#134); a ``response.cancel`` after the server VAD
already cancelled gets ``response_cancel_not_active``.

Routes (devserver/app.py)::

    GET  /openai/v1/realtime?model=M&scenario=S&...     the socket (subprotocols below)
    POST /openai/v1/realtime/client_secrets             mints ek_... (Authorization: Bearer sk-...)

So ``http://HOST/openai`` is an OpenAI base URL: ``serve.py --openai-base`` may point at it.

The socket. The client offers ``realtime`` and ``openai-insecure-api-key.<ek_...>`` (or sends
``Authorization: Bearer ek_...``); the server picks ``realtime`` and checks the key against the
client secrets it minted (unknown or expired: ``invalid_api_key``, close 3000). The beta
(``openai-beta.realtime-v1`` subprotocol or an ``OpenAI-Beta`` header) is refused. Then
``session.created``; the client's ``session.update`` (GA shape, ``session.type == "realtime"``)
is checked, its tools recorded, and answered with ``session.updated``; then the scenario runs as
responses (see devserver/emulation.py for how steps map to events):

* one response per turn: ``response.created`` (``output_modalities`` ``["audio"]`` for voice and
  flood, ``["text"]`` otherwise), ``response.output_item.added`` (a message, or a
  ``function_call`` per tool call, which closes the message; later content opens a new one),
  ``response.output_audio.delta`` (base64 PCM16 24 kHz, 20 ms each, real time in ``voice``) with
  ``response.output_audio_transcript.delta``, or ``response.output_text.delta``;
  ``response.function_call_arguments.delta`` in 3 fragments then ``.done``;
  ``response.output_item.done``; ``response.done`` with usage; ``rate_limits.updated``.
* A response that made tool calls is followed by the client's ``function_call_output`` items
  and **its** ``response.create``: the next response waits for it (and is the one it asked for).
  A ``response.create`` while one is in flight is an error (and refused as OpenAI does).
* Interruptions: scripted (``barge=`` s into an item) or the client's microphone (``input_audio_
  buffer.append`` louder than ``vad_threshold`` RMS for 60 ms, with server VAD on): the server
  sends ``input_audio_buffer.speech_started`` and, as server VAD with ``interrupt_response`` does,
  cancels the response in flight (``response.done`` ``cancelled``/``turn_detected``). A client's
  ``response.cancel`` cancels it too (``client_cancelled``).
* ``conversation.item.truncate`` is checked: ``audio_end_ms`` must be an integer, at most the
  audio *sent* for that item, and less than all of it (a truncate that cuts nothing is an error,
  as is one for an unknown item or a second one); each is recorded with its verdict.
* ``max_session_s`` (3600): ``error`` ``session_expired``, then close 1001.

Client mistakes (recorded in ``/stats`` ``errors`` and answered with an ``error`` event, the
session goes on): bad JSON, an unknown event type, a malformed event, a beta-shaped or invalid
``session.update``, two ``response.create`` in flight, a bad truncate, a ``function_call_output``
whose ``output`` is not a string, ``output_audio_buffer.clear`` (WebRTC only).
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from pyclient.frames import decode_json
from pyclient.protocols.openai_realtime import DEFAULT_MODEL, KEY_SUBPROTOCOL_PREFIX, RENEW_REASON, SUBPROTOCOL

from .emulation import (
    EMULATION,
    MAX_ITEMS,
    OPEN_WAIT_S,
    EmulatedSession,
    EmulationContext,
    EnergyVad,
    Refusal,
    SessionEnd,
    compact,
    parse_resume_point,
    parse_tool_output,
    resume_point,
)
from .scenarios import ParamError, Params
from .stats import clip, summarise
from .tokens import NO_STORE, MintedToken

RATE = 24_000  # GA audio/pcm is 24 kHz only
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
CLOSE_UNAUTHORIZED = 3000
CLOSE_BETA = 4000
CLOSE_EXPIRED = 1001
MAX_SESSION_S = 3600.0
TOOL_ARG_FRAGMENTS = 3
SECRET_SECONDS = (10, 7200)
DEFAULT_VOICE = "marin"
DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
)
# GA session fields (openai-node RealtimeSessionCreateRequest); the beta's flat audio fields are not.
SESSION_FIELDS = frozenset(
    {
        "type",
        "model",
        "instructions",
        "output_modalities",
        "audio",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "tracing",
        "prompt",
        "truncation",
        "include",
        "reasoning",
    }
)
BETA_FIELDS = frozenset(
    {
        "modalities",
        "input_audio_format",
        "output_audio_format",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "turn_detection",
        "voice",
        "speed",
        "temperature",
        "max_response_output_tokens",
    }
)
_KEY_SHAPE = re.compile(r"sk-[A-Za-z0-9_-]{16,200}")


def error_body(kind: str, code: str | None, message: str, param: str | None = None, event_id: Any = None) -> dict:
    return {
        "type": kind,
        "code": code,
        "message": message,
        "param": param,
        "event_id": event_id if isinstance(event_id, str) else None,
    }


@dataclass
class _Item:
    """An assistant message item (audio or text) the server sent."""

    id: str
    response_id: str
    output_index: int
    kind: str  # "audio" | "text"
    script_item: int | None = None  # the scenario's audio item id
    samples: int = 0  # audio samples sent
    complete: bool = False  # the scenario's last frame of this item was sent
    cut: bool = False  # its response was cancelled while it was streaming
    truncated: bool = False
    text: list[str] = field(default_factory=list)  # transcript / text while open


@dataclass
class _Response:
    id: str
    modality: str
    by_client: bool
    output: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    text_deltas: int = 0
    samples: int = 0
    done: bool = False


class OpenAIRealtimeSession(EmulatedSession):
    """The OpenAI Realtime GA server, emulated (see the module docstring)."""

    protocol: ClassVar[str] = "openai-realtime"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        conn = self.stats.id
        self.model = self.query.get("model") or DEFAULT_MODEL
        self.session_id = f"sess_pyclient{conn}"
        self._n = 0
        self.session: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.session_id,
            "model": self.model,
            "output_modalities": ["audio"],
            "instructions": DEFAULT_INSTRUCTIONS,
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "prompt": None,
            "expires_at": int(time.time() + self.max_session_s),
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": dict(DEFAULT_TURN_DETECTION),
                },
                "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": DEFAULT_VOICE, "speed": 1.0},
            },
            "include": None,
        }
        self.response: _Response | None = None
        self.item: _Item | None = None  # the open message item
        self.items: OrderedDict[str, _Item] = OrderedDict()
        self.calls: OrderedDict[str, str] = OrderedDict()  # call_id -> response_id
        self.prev_calls: list[str] = []  # the calls of the last response that made some
        self.needs_create = False  # the next response waits for the client's response.create
        self.create_for = "tools"  # ... after the outputs of its calls; "answer": see open_session
        self.queued_create: str | None = None  # a response.create not answered yet (its event_id or "")
        self.last_item: str | None = None  # previous_item_id
        self.user_item: str | None = None  # the user turn the VAD is in
        self.buffered = 0  # input audio samples since the last commit/clear
        self.session_updates = 0
        self.message_items = 0
        self.session_root = self.stats.id  # the conversation's first session (new sessions keep it)
        # (session, turns, root, foreign) of the conversation a replay continues
        self.replayed_from: tuple[int, int, int, bool] | None = None
        self.vad = EnergyVad(RATE, self.vad_threshold)
        self.rec.update(
            {
                "session_update": None,
                "tools_declared": [],
                "responses": 0,
                "response_create_received": 0,
                "response_cancel_received": 0,
                "cancels_not_active": 0,
                "truncates": [],
                "truncates_ok": 0,
                "truncates_bad": 0,
                "user_texts": 0,
                "replayed_assistant_items": 0,
                "response_open": False,
                "answers_asked_again": 0,
                "answers_not_asked": 0,
                "opening_items": 0,
                "waiting_for_create": False,
            }
        )

    def read_params(self, p: Params) -> None:
        self.max_session_s = p.num("max_session_s", MAX_SESSION_S, 0.1, 24 * 3600.0)
        if self.scenario == "voice":
            rates = {p.num("rate", RATE, 8000, 96000, int), *p.num_list("rates", [RATE], 8000, 96000, int)}
            if rates != {RATE}:
                raise ParamError(f"rates {sorted(rates)}: OpenAI Realtime sends audio/pcm at {RATE} Hz only")

    # ------------------------------------------------------------------ connecting

    @classmethod
    def server_protocols(cls, request: web.Request) -> tuple[str, ...]:
        # Every protocol the client offers but its key: so that no "protocols don't overlap"
        # warning (which would quote the key) is ever logged.
        offered = _offered(request)
        return (SUBPROTOCOL, *(p for p in offered if not p.startswith(KEY_SUBPROTOCOL_PREFIX)))

    @classmethod
    def authenticate(cls, ctx: EmulationContext, request: web.Request) -> MintedToken | Refusal | None:
        offered = _offered(request)
        if BETA_SUBPROTOCOL in offered or "OpenAI-Beta" in request.headers:
            message = (
                "The Realtime API beta shape is no longer supported (OpenAI-Beta: realtime=v1 / "
                f"{BETA_SUBPROTOCOL}). Use the GA interface."
            )
            error = error_body("invalid_request_error", "beta_api_shape_disabled", message)
            return Refusal(CLOSE_BETA, "invalid_request_error.beta_api_shape_disabled", "beta requested", error)
        keys = [p[len(KEY_SUBPROTOCOL_PREFIX) :] for p in offered if p.startswith(KEY_SUBPROTOCOL_PREFIX)]
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            keys.append(auth[7:].strip())
        if not keys:
            message = "Missing bearer or basic authentication in header"
            error = error_body("invalid_request_error", None, message)
            return Refusal(CLOSE_UNAUTHORIZED, "invalid_request_error", "no key", error)
        record = ctx.store.find("openai", keys[0])
        if record is None:
            shown = keys[0][:3] + "***" if keys[0].startswith(("ek_", "sk-")) else "***"
            message = (
                f"Incorrect API key provided: {shown}. The dev server's emulation accepts only the "
                "client secrets it minted (POST /session or /openai/v1/realtime/client_secrets), until they expire."
            )
            error = error_body("invalid_request_error", "invalid_api_key", message)
            why = "unknown or expired key" if keys[0].startswith("ek_") else "not an ephemeral key"
            return Refusal(CLOSE_UNAUTHORIZED, "invalid_request_error.invalid_api_key", why, error)
        return record

    async def refuse(self, refusal: Refusal) -> None:
        if refusal.error is not None:
            async with self.lock:
                await self.emit({"type": "error", "event_id": self._id("event"), "error": refusal.error})
        await super().refuse(refusal)

    async def open_session(self) -> None:
        async with self.lock:
            await self.emit({"type": "session.created", "event_id": self._id("event"), "session": self.session})
        if not await self.wait_until(lambda: self.session_updates > 0, OPEN_WAIT_S):
            self.check_open()
            self.client_error(f"no session.update within {OPEN_WAIT_S:g} s of session.created")
        if self.replayed_from is not None:  # the conversation replayed before session.update
            issuer, turns, root, foreign = self.replayed_from
            self.session_root = root
            self.resume_from(issuer, turns, foreign)
        # Replayed from a server before a restart: its root means nothing here (unknown).
        foreign = self.replayed_from is not None and self.replayed_from[3]
        before = None if foreign else self.ctx.latest_of(self.session_root, self.stats)
        emu = (before.emulation or {}) if before is not None else {}
        if emu.get("client_closed"):  # the client left between its responses (a renewal)
            cut = False
        elif emu.get("session_expired"):  # closed by the server: it knows what was in flight
            cut = bool(emu.get("response_open"))
        else:  # lost (dropped, the network) or unknown (a restart)
            cut = True
        if self.rec["opening_items"] and cut:
            # A new session never speaks first: the answer a lost session was giving comes
            # again when the client asks for it. Whether the client saw that answer begin is
            # not known after a loss (what was in flight is lost; a restart forgets), so the
            # first response waits for the client's request while it makes progress, then goes
            # on without it (the scripted turn, as a server-initiated one).
            self.needs_create = True
            self.create_for = "answer"

    def _note_replayed(self, item_id: Any) -> None:
        """An assistant item replayed into this new session: if one of ours, the conversation
        goes on after the turn it closed (the latest such turn wins)."""
        self.rec["replayed_assistant_items"] += 1
        if not isinstance(item_id, str) or self.session_updates:
            return
        point = parse_resume_point("i", item_id)
        if point is None:
            return
        issuer, turns, root, foreign = point
        if self.replayed_from is None or turns > self.replayed_from[1]:
            self.replayed_from = (issuer, turns, root, foreign)

    def closed_as_told(self) -> bool:
        """The client closed to renew the session before the limit, or after session_expired."""
        told = self.rec.get("session_expired") or self.client_close_reason == RENEW_REASON
        return bool(told) and self.closed.is_set()

    async def scenario_error(self, code: str, message: str) -> None:
        async with self.lock:
            await self._error(error_body("invalid_request_error", code, message))

    async def watchdog(self) -> None:
        await asyncio.sleep(self.max_session_s)
        minutes = self.max_session_s / 60
        message = f"Your session hit the maximum duration of {minutes:g} minutes."
        async with self.lock:
            await self._error(error_body("invalid_request_error", "session_expired", message))
        self.rec["session_expired"] = True
        raise SessionEnd(CLOSE_EXPIRED, message)

    # ------------------------------------------------------------------ helpers (call under lock)

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_pyclient{self.stats.id}_{self._n}"

    async def _error(self, error: dict[str, Any]) -> None:
        await self.emit({"type": "error", "event_id": self._id("event"), "error": error})

    async def _open_response(self) -> bool:
        """A response to send the step in (opened if none is); False if the turn was cancelled."""
        if self.dropping:
            return False
        if self.response is not None:
            return True
        if self.needs_create:
            self.rec["waiting_for_create"] = True
            got = await self.wait_progress(lambda: self.queued_create is not None)
            self.rec["waiting_for_create"] = False
            if not got and not self.closed.is_set() and self.create_for == "tools":
                self.client_error(
                    "no response.create after the function_call_output items of "
                    f"{len(self.prev_calls)} call(s): the next response started without it"
                )
            elif not got and self.create_for == "answer":
                self.rec["answers_not_asked"] += 1
        async with self.lock:
            if self.response is not None:
                return not self.dropping
            by_client = self.queued_create is not None
            if by_client and self.needs_create and self.create_for != "tools":
                self.rec["answers_asked_again"] += 1
            elif by_client and self.needs_create:
                unanswered = [c for c in self.prev_calls if c in self._pending]
                if unanswered:
                    self.client_error(
                        f"response.create before the function_call_output of {len(unanswered)} call(s) "
                        f"of the previous response ({', '.join(unanswered[:3])})"
                    )
            self.queued_create = None
            self.needs_create = False
            modality = "audio" if self.audio_scenario else "text"
            self.response = _Response(self._id("resp"), modality, by_client)
            await self.emit(
                {"type": "response.created", "event_id": self._id("event"), "response": self._response_object()}
            )
            self.rec["response_open"] = True
        return True

    def _response_object(self, status: str = "in_progress", details: Any = None, usage: Any = None) -> dict:
        resp = self.response
        assert resp is not None
        return {
            "object": "realtime.response",
            "id": resp.id,
            "status": status,
            "status_details": details,
            "output": resp.output,
            "conversation_id": f"conv_pyclient{self.stats.id}",
            "output_modalities": [resp.modality],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": self._voice()}},
            "usage": usage,
            "metadata": None,
        }

    def _voice(self) -> str:
        audio = self.session.get("audio")
        output = audio.get("output") if isinstance(audio, dict) else None
        voice = output.get("voice") if isinstance(output, dict) else None
        return voice if isinstance(voice, str) else DEFAULT_VOICE

    async def _message_item(self, script_item: int | None) -> _Item:
        resp = self.response
        assert resp is not None
        item = self.item
        if item is not None and (script_item is None or item.script_item in (None, script_item)):
            if script_item is not None:
                item.script_item = script_item
            return item
        if item is not None:
            await self._close_item()
        kind = resp.modality
        # Its id says which turn it belongs to: a new session the conversation is replayed into
        # goes on after that turn (and a restarted server can still read it: signed).
        self.message_items += 1  # (short: an item id the client may send back is at most 32 characters)
        item_id = resume_point("i", self.stats.id, self.session_root, self.turns + 1, f"{self.message_items:x}")
        item = _Item(item_id, resp.id, len(resp.output), kind, script_item)
        resp.output.append({"id": item.id, "type": "message"})  # completed in _close_item
        self.item = item
        self.items[item.id] = item
        while len(self.items) > MAX_ITEMS:
            self.items.popitem(last=False)
        body = {
            "id": item.id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        where = {"response_id": resp.id, "output_index": item.output_index}
        await self.emit({"type": "response.output_item.added", "event_id": self._id("event"), **where, "item": body})
        await self.emit(
            {
                "type": "conversation.item.added",
                "event_id": self._id("event"),
                "previous_item_id": self.last_item,
                "item": body,
            }
        )
        self.last_item = item.id
        part = {"type": "audio", "transcript": ""} if kind == "audio" else {"type": "text", "text": ""}
        await self.emit(
            {
                "type": "response.content_part.added",
                "event_id": self._id("event"),
                **where,
                "item_id": item.id,
                "content_index": 0,
                "part": part,
            }
        )
        return item

    async def _close_item(self, cancelled: bool = False) -> None:
        item, resp = self.item, self.response
        assert item is not None and resp is not None
        self.item = None
        text = "".join(item.text)
        item.text = []
        where = {"response_id": resp.id, "item_id": item.id, "output_index": item.output_index, "content_index": 0}
        if item.kind == "audio":
            content = {"type": "output_audio", "transcript": text}
            part = {"type": "audio", "transcript": text}
        else:
            content = {"type": "output_text", "text": text}
            part = {"type": "text", "text": text}
        if not cancelled:  # a cancelled item just ends (response.done says why)
            if item.kind == "audio":
                if item.samples:
                    await self.emit({"type": "response.output_audio.done", "event_id": self._id("event"), **where})
                await self.emit(
                    {
                        "type": "response.output_audio_transcript.done",
                        "event_id": self._id("event"),
                        **where,
                        "transcript": text,
                    }
                )
            else:
                await self.emit(
                    {"type": "response.output_text.done", "event_id": self._id("event"), **where, "text": text}
                )
            await self.emit(
                {"type": "response.content_part.done", "event_id": self._id("event"), **where, "part": part}
            )
        body = {
            "id": item.id,
            "object": "realtime.item",
            "type": "message",
            "status": "incomplete" if cancelled else "completed",
            "role": "assistant",
            "content": [content],
        }
        resp.output[item.output_index] = body
        await self.emit(
            {
                "type": "response.output_item.done",
                "event_id": self._id("event"),
                "response_id": resp.id,
                "output_index": item.output_index,
                "item": body,
            }
        )
        await self.emit({"type": "conversation.item.done", "event_id": self._id("event"), "item": body})

    async def _finish_response(self, status: str, reason: str | None = None) -> None:
        resp = self.response
        assert resp is not None and not resp.done
        if self.item is not None:
            await self._close_item(cancelled=status == "cancelled")
        resp.done = True
        audio_tokens = resp.samples // 1200  # about 20 tokens a second
        text_tokens = resp.text_deltas
        usage = {
            "total_tokens": 120 + audio_tokens + text_tokens,
            "input_tokens": 120,
            "output_tokens": audio_tokens + text_tokens,
            "input_token_details": {"text_tokens": 120, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
        }
        details = {"type": status, "reason": reason} if reason else None
        await self.emit(
            {
                "type": "response.done",
                "event_id": self._id("event"),
                "response": self._response_object(status, details, usage),
            }
        )
        self.rec["responses"] += 1
        self.rec["response_open"] = False
        await self.emit(
            {
                "type": "rate_limits.updated",
                "event_id": self._id("event"),
                "rate_limits": [
                    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                    {
                        "name": "tokens",
                        "limit": 40000,
                        "remaining": max(0, 40000 - usage["total_tokens"]),
                        "reset_seconds": 0.3,
                    },
                ],
            }
        )
        if resp.calls and status == "cancelled":
            # A cancelled response's calls are not waited for: the user spoke over them, the
            # next response answers the user (a client withdraws calls it had not answered).
            for call_id in resp.calls:
                self._pending.pop(call_id, None)
        elif resp.calls:
            self.needs_create = True
            self.create_for = "tools"
            self.prev_calls = list(resp.calls)

    async def _cancel_response(self, reason: str) -> None:
        """Cancel the response in flight (the caller checked there is one)."""
        item = self.item
        if item is not None and item.kind == "audio":
            item.cut = True
            if item.script_item is not None:
                self._cut(item.script_item)
        await self._finish_response("cancelled", reason)
        self.dropping = True

    def _cut(self, script_item: int) -> None:
        self.cut_items[script_item] = None
        while len(self.cut_items) > MAX_ITEMS:
            del self.cut_items[next(iter(self.cut_items))]

    async def _speech_started(self, audio_start_ms: int) -> None:
        self.user_item = self._id("item")
        self.rec["interruptions"] += 1
        await self.emit(
            {
                "type": "input_audio_buffer.speech_started",
                "event_id": self._id("event"),
                "audio_start_ms": audio_start_ms,
                "item_id": self.user_item,
            }
        )
        detection = self._turn_detection() or {}
        if detection.get("interrupt_response", True) and self.response is not None and not self.response.done:
            await self._cancel_response("turn_detected")

    async def _speech_stopped(self, audio_end_ms: int) -> None:
        item_id = self.user_item or self._id("item")
        self.user_item = None
        await self.emit(
            {
                "type": "input_audio_buffer.speech_stopped",
                "event_id": self._id("event"),
                "audio_end_ms": audio_end_ms,
                "item_id": item_id,
            }
        )
        await self._commit(item_id)

    async def _commit(self, item_id: str) -> None:
        self.buffered = 0
        await self.emit(
            {
                "type": "input_audio_buffer.committed",
                "event_id": self._id("event"),
                "previous_item_id": self.last_item,
                "item_id": item_id,
            }
        )
        body = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self.emit(
            {
                "type": "conversation.item.added",
                "event_id": self._id("event"),
                "previous_item_id": self.last_item,
                "item": body,
            }
        )
        self.last_item = item_id

    def _input_format(self) -> str:
        audio = self.session.get("audio")
        inp = audio.get("input") if isinstance(audio, dict) else None
        fmt = inp.get("format") if isinstance(inp, dict) else None
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        return kind if isinstance(kind, str) else "audio/pcm"

    def _turn_detection(self) -> dict[str, Any] | None:
        audio = self.session.get("audio")
        inp = audio.get("input") if isinstance(audio, dict) else None
        detection = inp.get("turn_detection") if isinstance(inp, dict) else None
        return detection if isinstance(detection, dict) else None

    # ------------------------------------------------------------------ steps

    async def render_text(self, data: str | bytes) -> bool:
        raw, chunk = self.take_text(data)
        if not await self._open_response():
            return False
        async with self.lock:
            if self.dropping or self.response is None:
                return False
            self.stats.on_text(raw)
            if not chunk:
                return True  # the rest of a character comes with the next step
            item = await self._message_item(None)
            item.text.append(chunk)
            self.response.text_deltas += 1
            kind = "response.output_audio_transcript.delta" if item.kind == "audio" else "response.output_text.delta"
            await self.emit(
                {
                    "type": kind,
                    "event_id": self._id("event"),
                    "response_id": item.response_id,
                    "item_id": item.id,
                    "output_index": item.output_index,
                    "content_index": 0,
                    "delta": chunk,
                }
            )
        return True

    async def render_audio(self, pcm: bytes, sample_rate: int, item_id: int, final: bool) -> bool:
        if sample_rate != RATE:
            raise ParamError(f"OpenAI Realtime sends audio/pcm at {RATE} Hz only, not {sample_rate} Hz")
        if not await self._open_response():
            return False
        async with self.lock:
            if self.dropping or self.response is None:
                return False
            item = await self._message_item(item_id)
            self.stats.on_audio(pcm)
            n = len(pcm) // 2
            item.samples += n
            item.complete = final
            self.response.samples += n
            b64 = binascii.b2a_base64(pcm, newline=False).decode("ascii")
            await self.write(
                '{"type":"response.output_audio.delta","event_id":"' + self._id("event") + '","response_id":"'
                + item.response_id + '","item_id":"' + item.id + '","output_index":' + str(item.output_index)
                + ',"content_index":0,"delta":"' + b64 + '"}'
            )  # fmt: skip
        return True

    async def render_tool_call(self, name: str, arguments: Any, expect: Any) -> str | None:
        return await self._tool_call(name, json.dumps(arguments), expect)

    async def _tool_call(self, name: str, raw: str, expect: Any = None) -> str | None:
        if not await self._open_response():
            return None
        async with self.lock:
            resp = self.response
            if self.dropping or resp is None:
                return None
            if self.item is not None:
                await self._close_item()
            call_id = self.call_id_for(name)
            item_id = self._id("item")
            output_index = len(resp.output)
            self.expect_result(call_id, name, expect)
            self.stats.tool_calls_sent += 1
            resp.calls.append(call_id)
            self.calls[call_id] = resp.id
            while len(self.calls) > MAX_ITEMS:
                self.calls.popitem(last=False)
            body = {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "name": name,
                "call_id": call_id,
                "arguments": "",
            }
            resp.output.append(body)
            where = {"response_id": resp.id, "output_index": output_index}
            await self.emit(
                {"type": "response.output_item.added", "event_id": self._id("event"), **where, "item": body}
            )
            await self.emit(
                {
                    "type": "conversation.item.added",
                    "event_id": self._id("event"),
                    "previous_item_id": self.last_item,
                    "item": body,
                }
            )
            self.last_item = item_id
            step = max(1, -(-len(raw) // TOOL_ARG_FRAGMENTS))
            for i in range(0, len(raw), step):
                await self.emit(
                    {
                        "type": "response.function_call_arguments.delta",
                        "event_id": self._id("event"),
                        **where,
                        "item_id": item_id,
                        "call_id": call_id,
                        "delta": raw[i : i + step],
                    }
                )
            await self.emit(
                {
                    "type": "response.function_call_arguments.done",
                    "event_id": self._id("event"),
                    **where,
                    "item_id": item_id,
                    "call_id": call_id,
                    "name": name,
                    "arguments": raw,
                }
            )
            done = {**body, "status": "completed", "arguments": raw}
            resp.output[output_index] = done
            await self.emit({"type": "response.output_item.done", "event_id": self._id("event"), **where, "item": done})
            await self.emit({"type": "conversation.item.done", "event_id": self._id("event"), "item": done})
        return call_id

    def call_id_for(self, name: str) -> str:
        # The same call of the same turn has the same id in every session of a conversation (a
        # new session sends the turn the old one cut short again; the client answers it once).
        self.turn_call_count += 1
        key = f"{self.session_root}:{self.turns}:{self.turn_call_count}:{name}".encode()
        return "call_" + hashlib.sha256(key).hexdigest()[:16]

    async def control(self, type: str, **fields: Any) -> None:
        if self.skipping:  # a turn an earlier session of the conversation delivered
            if type == "end_of_turn":
                self.skipped_turn()
            return
        if type == "end_of_turn":
            async with self.lock:
                resp = self.response
                if resp is not None and not resp.done:
                    await self._finish_response("completed")
                self.response = None
                self.dropping = False
                self.turns += 1
                self.turn_call_count = 0
        elif type == "interrupted":  # scripted barge-in: the emulated user speaks for a moment
            async with self.lock:
                start = self.mic_ms()
                await self._speech_started(start)
                await self._speech_stopped(start + 200)
        elif type == "error":
            await self.scenario_error(str(fields.get("code", "error")), str(fields.get("message", "")))

    async def finish(self) -> None:
        await self.control("end_of_turn")
        await self.wait_results()

    async def lingering(self) -> None:
        """A ``response.create`` the script has no response for gets an empty one."""
        while self.queued_create is not None and not self.closed.is_set():
            await self._open_response()
            await self.control("end_of_turn")

    # ------------------------------------------------------------------ client events

    async def on_message(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            self.client_error(f"a binary message of {len(data)} bytes; the protocol is JSON text")
            async with self.lock:
                await self._error(error_body("invalid_request_error", "invalid_json", "Expected a text message."))
            return
        try:
            event = decode_json(data)
        except ValueError as exc:
            self.client_error(f"bad JSON from the client ({len(data)} characters): {str(exc)[:100]}")
            async with self.lock:
                message = f"We could not parse the JSON body of your request: {str(exc)[:100]}"
                await self._error(error_body("invalid_request_error", "invalid_json", message))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.client_error("a client event that is not an object with a string 'type'")
            async with self.lock:
                message = "Missing required parameter: 'type'."
                await self._error(error_body("invalid_request_error", "missing_required_parameter", message, "type"))
            return
        kind: str = event["type"]
        self.client_types.add(kind)
        handler = _HANDLERS.get(kind)
        if handler is None:
            self.client_error(f"unknown client event type {clip(kind, 80)!r}")
            supported = ", ".join(f"'{t}'" for t in CLIENT_EVENTS)
            message = f"Invalid value: '{clip(kind, 80)}'. Supported values are: {supported}."
            async with self.lock:
                await self._error(
                    error_body("invalid_request_error", "invalid_value", message, "type", event.get("event_id"))
                )
            return
        await handler(self, event)

    async def _reject(self, event: dict[str, Any], code: str, message: str, param: str | None = None) -> None:
        """A client event the server refuses: recorded as a client error and answered."""
        self.client_error(f"{event.get('type')}: {message}")
        async with self.lock:
            await self._error(error_body("invalid_request_error", code, message, param, event.get("event_id")))

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        problem = _session_problem(session)
        if problem is not None:
            code, message, param = problem
            await self._reject(event, code, message, param)
            return
        assert isinstance(session, dict)
        for key, value in session.items():
            if key == "audio" and isinstance(value, dict):
                audio = self.session["audio"]
                for direction in ("input", "output"):
                    if isinstance(value.get(direction), dict):
                        audio[direction] = {**audio[direction], **value[direction]}
            elif key != "type":
                self.session[key] = value
        self.session_updates += 1
        self.rec["session_update"] = summarise(session, 4096)
        tools = session.get("tools")
        if isinstance(tools, list):
            self.rec["tools_declared"] = [clip(str(t.get("name")), 64) for t in tools[:64] if isinstance(t, dict)]
        async with self.lock:
            await self.emit({"type": "session.updated", "event_id": self._id("event"), "session": self.session})

    async def _on_append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            await self._reject(event, "invalid_type", "'audio' must be a base64 string", "audio")
            return
        try:
            pcm = binascii.a2b_base64(audio, strict_mode=True)
        except (binascii.Error, ValueError):
            await self._reject(
                event, "invalid_value", f"'audio' ({len(audio)} characters) is not valid base64", "audio"
            )
            return
        if len(pcm) % 2 and self._input_format() == "audio/pcm":
            await self._reject(event, "invalid_value", f"{len(pcm)} bytes of audio/pcm: half a sample", "audio")
            return
        fmt = self._input_format()
        if fmt in ("audio/pcmu", "audio/pcma"):  # G.711 at 8 kHz: a byte a sample, no VAD here
            self.on_mic(pcm, 8000, len(pcm))
            self.buffered += len(pcm) * RATE // 8000
            return
        self.on_mic(pcm, RATE)
        self.buffered += len(pcm) // 2
        if self._turn_detection() is None:
            return
        for kind, ms in self.vad.feed(pcm):
            async with self.lock:
                if kind == "start":
                    await self._speech_started(ms)
                else:
                    await self._speech_stopped(ms)
                    self._mic_end.set()

    async def _on_commit(self, event: dict[str, Any]) -> None:
        if self.buffered < RATE // 10:
            ms = self.buffered * 1000 / RATE
            message = (
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {ms:.2f}ms of audio."
            )
            await self._reject(event, "input_audio_buffer_commit_empty", message)
            return
        async with self.lock:
            await self._commit(self.user_item or self._id("item"))
            self.user_item = None
        self._mic_end.set()

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self.buffered = 0
        async with self.lock:
            await self.emit({"type": "input_audio_buffer.cleared", "event_id": self._id("event")})

    async def _on_output_clear(self, event: dict[str, Any]) -> None:
        await self._reject(event, "invalid_value", "output_audio_buffer.clear is only supported for WebRTC and SIP")

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            await self._reject(event, "missing_required_parameter", "Missing required parameter: 'item'.", "item")
            return
        kind = item.get("type")
        if kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not call_id:
                await self._reject(event, "invalid_type", "'item.call_id' must be a string", "item.call_id")
                return
            if not isinstance(output, str):
                await self._reject(
                    event, "invalid_type", f"'item.output' must be a string, got {type(output).__name__}", "item.output"
                )
                return
            try:
                ok, result, error = parse_tool_output(decode_json(output))
            except ValueError:
                ok, result, error = True, output, None  # plain text output
            self.tool_result(call_id, ok, result, error)
        elif kind == "message":
            if not self.session_updates:
                self.rec["opening_items"] += 1  # a conversation replayed into this new session
            if item.get("role") == "assistant":
                self._note_replayed(item.get("id"))
            else:
                self.rec["user_texts"] += 1
                self.remember("user_messages", summarise(item.get("content")))
        elif kind != "function_call":
            await self._reject(
                event, "invalid_value", f"Invalid value: {clip(str(kind), 40)!r} for 'item.type'", "item.type"
            )
            return
        async with self.lock:
            item_id = item.get("id") if isinstance(item.get("id"), str) else self._id("item")
            body = {**item, "id": item_id, "object": "realtime.item", "status": "completed"}
            prev = self.last_item
            self.last_item = item_id
            added = {"type": "conversation.item.added", "event_id": self._id("event"), "previous_item_id": prev}
            await self.emit({**added, "item": body})
            await self.emit({"type": "conversation.item.done", "event_id": self._id("event"), "item": body})

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        item = self.items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            await self._reject(
                event, "item_retrieve_invalid_item_id", f"Item with item_id {clip(str(item_id), 80)!r} not found"
            )
            return
        async with self.lock:
            body = {"id": item.id, "object": "realtime.item", "type": "message", "role": "assistant", "content": []}
            await self.emit({"type": "conversation.item.retrieved", "event_id": self._id("event"), "item": body})

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            await self._reject(event, "invalid_type", "'item_id' must be a string", "item_id")
            return
        async with self.lock:
            await self.emit({"type": "conversation.item.deleted", "event_id": self._id("event"), "item_id": item_id})

    async def _on_truncate(self, event: dict[str, Any]) -> None:
        item_id, ms, index = event.get("item_id"), event.get("audio_end_ms"), event.get("content_index")
        item = self.items.get(item_id) if isinstance(item_id, str) else None
        entry: dict[str, Any] = {
            "item_id": clip(str(item_id), 100),
            "content_index": summarise(index),
            "audio_end_ms": summarise(ms),
        }
        problem, param = None, "audio_end_ms"
        if item is None:
            problem, param = f"no audio item {clip(str(item_id), 80)!r} was sent", "item_id"
        else:
            entry.update(
                samples_sent=item.samples,
                sent_ms=item.samples * 1000 / RATE,
                complete=item.complete,
                cut_by_server=item.cut,
                script_item=item.script_item,
            )
            if type(ms) is not int:
                problem = f"audio_end_ms={clip(repr(ms), 40)} is not an integer"
            elif index != 0:
                problem, param = f"content_index={clip(repr(index), 40)}: the audio is content 0", "content_index"
            elif item.kind != "audio" or item.samples == 0:
                problem = f"item {item.id} has no audio"
            elif ms < 0:
                problem = f"audio_end_ms={ms} is negative"
            elif ms * RATE > item.samples * 1000:
                problem = (
                    f"audio_end_ms={ms} is beyond the {item.samples * 1000 / RATE:g} ms of audio sent for {item.id}"
                )
            elif ms * RATE == item.samples * 1000:
                problem = f"audio_end_ms={ms} is all the audio sent for {item.id}: nothing was cut"
            elif item.truncated:
                problem = f"item {item.id} was truncated already"
        entry["ok"] = problem is None
        if problem is not None:
            entry["problem"] = problem
            self.rec["truncates_bad"] += 1
        else:
            self.rec["truncates_ok"] += 1
        truncates = self.rec["truncates"]
        truncates.append(entry)
        del truncates[: max(0, len(truncates) - 50)]
        if problem is not None:
            await self._reject(event, "invalid_value", f"conversation.item.truncate: {problem}", param)
            return
        assert item is not None
        item.truncated = True
        if item.script_item is not None:
            self._cut(item.script_item)  # as a playback_position on /ws: stop sending that item
        async with self.lock:
            await self.emit(
                {
                    "type": "conversation.item.truncated",
                    "event_id": self._id("event"),
                    "item_id": item.id,
                    "content_index": 0,
                    "audio_end_ms": ms,
                }
            )

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        self.rec["response_create_received"] += 1
        active = self.response is not None and not self.response.done
        if active or self.queued_create is not None:
            which = self.response.id if active and self.response is not None else "(the one requested before)"
            self.client_error(f"two response.create in flight: {which} is not done")
            message = (
                f"Conversation already has an active response in progress: {which}. "
                "Wait until the response is finished before creating a new one."
            )
            async with self.lock:
                error = error_body("invalid_request_error", "conversation_already_has_active_response", message)
                await self._error(
                    {**error, "event_id": event.get("event_id") if isinstance(event.get("event_id"), str) else None}
                )
            return
        eid = event.get("event_id")
        self.queued_create = eid if isinstance(eid, str) else ""

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        self.rec["response_cancel_received"] += 1
        rid = event.get("response_id")
        async with self.lock:
            resp = self.response
            if resp is None or resp.done or (isinstance(rid, str) and rid and rid != resp.id):
                self.rec["cancels_not_active"] += 1
                self.remember("cancels", {"response_id": clip(str(rid), 100), "active": False})
                message = "Cancellation failed: no active response found"
                await self._error(
                    error_body(
                        "invalid_request_error", "response_cancel_not_active", message, None, event.get("event_id")
                    )
                )
                return
            self.remember("cancels", {"response_id": resp.id, "active": True})
            await self._cancel_response("client_cancelled")

    # ------------------------------------------------------------------ the provider's REST endpoint


async def client_secrets(request: web.Request) -> web.Response:
    """``POST /openai/v1/realtime/client_secrets``: what api.openai.com answers (openai-node
    ``ClientSecretCreateParams`` / ``ClientSecretCreateResponse``). Checks the Bearer key and the body."""
    ctx = request.app[EMULATION]
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        message = (
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return _rest_error(401, error_body("invalid_request_error", None, message))
    key = auth[7:].strip()
    if key.startswith("ek_") or not ctx.key_ok("openai", key, lambda k: bool(_KEY_SHAPE.fullmatch(k))):
        message = "Incorrect API key provided: sk-***. You can find your API key at https://platform.openai.com/account/api-keys."
        return _rest_error(401, error_body("invalid_request_error", "invalid_api_key", message))
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _rest_error(
            400, error_body("invalid_request_error", None, "We could not parse the JSON body of your request.")
        )
    problem = _secret_problem(body)
    if problem is not None:
        return _rest_error(400, error_body("invalid_request_error", problem[0], problem[1], problem[2]))
    expires = body.get("expires_after") or {}
    seconds = expires.get("seconds", 600)
    session = body.get("session") or {"type": "realtime"}
    model = session.get("model") or DEFAULT_MODEL
    value, record = ctx.store.mint_openai(model, seconds, session)
    answer = {
        "value": value,
        "expires_at": int(record.expires_at),
        "session": {
            "type": "realtime",
            "object": "realtime.session",
            "id": "sess_" + secrets.token_hex(10),
            "model": model,
            "output_modalities": session.get("output_modalities", ["audio"]),
            "instructions": session.get("instructions", DEFAULT_INSTRUCTIONS),
            "tools": session.get("tools", []),
            "tool_choice": session.get("tool_choice", "auto"),
            "max_output_tokens": "inf",
            "tracing": None,
            "prompt": None,
            "expires_at": 0,
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": DEFAULT_TURN_DETECTION},
                "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": DEFAULT_VOICE},
            },
        },
    }
    return web.json_response(answer, headers=NO_STORE)


def _rest_error(status: int, error: dict[str, Any]) -> web.Response:
    return web.json_response({"error": error}, status=status, headers=NO_STORE)


def _secret_problem(body: Any) -> tuple[str, str, str | None] | None:
    if not isinstance(body, dict):
        return "invalid_type", "The request body must be a JSON object.", None
    for key in body:
        if key not in ("expires_after", "session"):
            return "unknown_parameter", f"Unknown parameter: '{clip(str(key), 40)}'.", str(key)[:40]
    expires = body.get("expires_after")
    if expires is not None:
        if not isinstance(expires, dict):
            return "invalid_type", "'expires_after' must be an object.", "expires_after"
        if expires.get("anchor", "created_at") != "created_at":
            return (
                "invalid_value",
                "Invalid value for 'expires_after.anchor': only 'created_at'.",
                "expires_after.anchor",
            )
        seconds = expires.get("seconds", 600)
        lo, hi = SECRET_SECONDS
        if type(seconds) is not int or not lo <= seconds <= hi:
            return (
                "invalid_value",
                f"'expires_after.seconds' must be an integer from {lo} to {hi}.",
                "expires_after.seconds",
            )
    session = body.get("session")
    if session is not None:
        if not isinstance(session, dict):
            return "invalid_type", "'session' must be an object.", "session"
        if session.get("type") != "realtime":
            return "invalid_value", "'session.type' must be 'realtime' (or 'transcription').", "session.type"
        model = session.get("model")
        if model is not None and not isinstance(model, str):
            return "invalid_type", "'session.model' must be a string.", "session.model"
    return None


def _session_problem(session: Any) -> tuple[str, str, str | None] | None:
    """Why a ``session.update`` is refused (code, message, param), or None: the GA shape only."""
    if not isinstance(session, dict):
        return "missing_required_parameter", "Missing required parameter: 'session'.", "session"
    for key in session:
        if key in BETA_FIELDS:
            return (
                "unknown_parameter",
                f"Unknown parameter: 'session.{key}' (a beta field; GA nests audio settings under session.audio).",
                f"session.{key}",
            )
        if key not in SESSION_FIELDS:
            return (
                "unknown_parameter",
                f"Unknown parameter: 'session.{clip(str(key), 40)}'.",
                f"session.{str(key)[:40]}",
            )
    kind = session.get("type")
    if kind is None:
        return "missing_required_parameter", "Missing required parameter: 'session.type'.", "session.type"
    if kind != "realtime":
        return (
            "invalid_value",
            f"Invalid value for 'session.type': {clip(repr(kind), 40)} (this socket is a realtime session).",
            "session.type",
        )
    modalities = session.get("output_modalities")
    if modalities is not None and (
        not isinstance(modalities, list) or len(modalities) != 1 or modalities[0] not in ("audio", "text")
    ):
        return (
            "invalid_value",
            '\'session.output_modalities\' must be ["audio"] or ["text"]: not both.',
            "session.output_modalities",
        )
    audio = session.get("audio")
    if audio is not None:
        if not isinstance(audio, dict):
            return "invalid_type", "'session.audio' must be an object.", "session.audio"
        for direction in ("input", "output"):
            part = audio.get(direction)
            if part is None:
                continue
            if not isinstance(part, dict):
                return "invalid_type", f"'session.audio.{direction}' must be an object.", f"session.audio.{direction}"
            fmt = part.get("format")
            if fmt is not None:
                param = f"session.audio.{direction}.format"
                if not isinstance(fmt, dict) or fmt.get("type") not in ("audio/pcm", "audio/pcmu", "audio/pcma"):
                    return "invalid_value", f"'{param}.type' must be audio/pcm, audio/pcmu or audio/pcma.", param
                if fmt.get("type") == "audio/pcm" and fmt.get("rate", RATE) != RATE:
                    return "invalid_value", f"'{param}.rate': audio/pcm is {RATE} Hz only.", param
            if direction == "input" and "turn_detection" in part:
                detection = part["turn_detection"]
                if detection is not None and (
                    not isinstance(detection, dict) or detection.get("type") not in ("server_vad", "semantic_vad")
                ):
                    param = "session.audio.input.turn_detection"
                    return "invalid_value", f"'{param}' must be null or of type server_vad or semantic_vad.", param
    tools = session.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "invalid_type", "'session.tools' must be an array.", "session.tools"
        for i, tool in enumerate(tools):
            param = f"session.tools[{i}]"
            if not isinstance(tool, dict) or tool.get("type") not in ("function", "mcp"):
                return "invalid_value", f"'{param}.type' must be 'function' (or 'mcp').", param
            if tool.get("type") == "function":
                if not isinstance(tool.get("name"), str) or not tool["name"]:
                    return "missing_required_parameter", f"Missing required parameter: '{param}.name'.", param
                params = tool.get("parameters")
                if params is not None and (not isinstance(params, dict) or params.get("type") != "object"):
                    return "invalid_value", f"'{param}.parameters' must be a JSON Schema of type object.", param
    return None


def _offered(request: web.Request) -> list[str]:
    return [p.strip() for h in request.headers.getall("Sec-WebSocket-Protocol", []) for p in h.split(",") if p.strip()]


async def faults(s: OpenAIRealtimeSession, p: Params) -> None:
    """Valid text around events a robust client counts and survives: bad JSON, an unknown event
    type, events of an unexpected shape (a text delta that is a number, audio that is not
    base64), a call to a tool nobody registered and a call whose arguments are not JSON."""
    await s.text("before the faults. ")
    await s._open_response()
    async with s.lock:
        rid = s.response.id if s.response is not None else "resp_none"
        await s.write("{not json")
        await s.emit({"type": "response.future_event", "event_id": s._id("event"), "response_id": rid})
        await s.emit(
            {
                "type": "response.output_text.delta",
                "event_id": s._id("event"),
                "response_id": rid,
                "item_id": "item_faulty",
                "output_index": 0,
                "content_index": 0,
                "delta": 42,
            }
        )
        await s.emit(
            {
                "type": "response.output_audio.delta",
                "event_id": s._id("event"),
                "response_id": rid,
                "item_id": "item_faulty",
                "output_index": 0,
                "content_index": 0,
                "delta": "@@ not base64 @@",
            }
        )
        await s.write(compact(["an", "array"]))
    await s.tool_call("launch_rockets", {"count": 3})
    await s._tool_call("calculator", '{"expression": ')
    await s.text("after the faults.")
    await s.control("end_of_turn")


OpenAIRealtimeSession.faults = faults  # type: ignore[assignment]

_HANDLERS = {
    "session.update": OpenAIRealtimeSession._on_session_update,
    "input_audio_buffer.append": OpenAIRealtimeSession._on_append,
    "input_audio_buffer.commit": OpenAIRealtimeSession._on_commit,
    "input_audio_buffer.clear": OpenAIRealtimeSession._on_clear,
    "output_audio_buffer.clear": OpenAIRealtimeSession._on_output_clear,
    "conversation.item.create": OpenAIRealtimeSession._on_item_create,
    "conversation.item.retrieve": OpenAIRealtimeSession._on_item_retrieve,
    "conversation.item.truncate": OpenAIRealtimeSession._on_truncate,
    "conversation.item.delete": OpenAIRealtimeSession._on_item_delete,
    "response.create": OpenAIRealtimeSession._on_response_create,
    "response.cancel": OpenAIRealtimeSession._on_response_cancel,
}
