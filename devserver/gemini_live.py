"""An emulated Gemini Live server (``BidiGenerateContent``): the socket and the auth-token endpoint.

Sources (googleapis/js-genai at the commit named in tests/unit/fixtures/gemini_live/README.md):
``src/live.ts`` (URL and method per credential, JSON in text *or* binary frames, ``setup``
first), ``src/types.ts`` (``LiveServerMessage``, ``AuthToken``), ``src/tokens.ts`` and
``src/converters/_tokens_converters.ts`` (the ``auth_tokens`` body), ``src/converters/
_live_converters.ts`` (the ``setup`` fields). Behaviour of the real service reported in issue
threads: a token used as ``?key=`` gets "API key not valid. Please pass a valid API key."
(js-genai#600); ``access_token`` on the unconstrained method gets "Method doesn't allow
unregistered callers..." (google-gemini/cookbook#821); after ``goAway`` the socket closes with
1011 "Deadline expired before operation could complete." (kizuna-ai-lab/sokuji#179); a resume
while the old socket is open is refused with 1011 (aicc2025/sip-to-ai#14); a bad request closes
with 1007 (invalid argument).

Routes (devserver/app.py)::

    GET  /gemini/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained
             ?access_token=auth_tokens/...&scenario=S&...
    GET  /gemini/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent?key=...&...
    POST /gemini/v1alpha/auth_tokens        mints auth_tokens/... (x-goog-api-key)

So ``http://HOST/gemini`` is a Gemini base URL: ``serve.py --gemini-base`` may point at it.
Scenario parameters ride in the same query (``&scenario=voice&seconds=2``).

Credentials. A token (minted here: single use by default, ``newSessionExpireTime`` 60 s,
``expireTime`` 30 min) goes to the v1alpha ``...Constrained`` method as ``access_token``; a key
goes to ``BidiGenerateContent`` as ``key`` (or ``x-goog-api-key``). A token on ``?key=`` is "API
key not valid" (1007); ``access_token`` on the unconstrained method, or a key on the constrained
one, is refused with 1008; so is an unknown, expired or used-up token. Resuming a session (a
valid ``setup.sessionResumption.handle``) does not count as a use.

The session. The first client message must be ``setup`` (anything else: close 1007); the server
answers ``setupComplete``. Then the scenario as ``serverContent``: ``modelTurn.parts`` with
``inlineData`` ``audio/pcm;rate=24000`` (20 ms per message) and ``outputTranscription`` (voice,
flood) or text parts (chat, faults, upload); ``interrupted``; ``generationComplete``;
``turnComplete`` with ``usageMetadata``. Tool calls are whole ``toolCall.functionCalls`` (a turn
ends only when their ``toolResponse`` arrived); ``cancel_tool=1`` sends one more call (the demo's
slow ``slow_lookup``) and cancels it (``toolCallCancellation``) in the same write, or ``cancel_ms`` later: a result
for it is an error. With ``setup.sessionResumption`` the server sends ``sessionResumptionUpdate``
(not resumable after a tool call, a new handle after each turn). ``lifetime_s`` (600):
``goAway {timeLeft}`` ``goaway_s`` (60, at most half the lifetime) before the end, then close 1011.
``binary=1`` sends every message in binary frames (as the real service does to browsers).
``asked=1``: each model turn answers a user turn (``clientContent`` with ``turnComplete``, or
``realtimeInput.text``) sent on its connection and waits for one; a session resumed from a handle
therefore regenerates a turn the loss cut short only when the client sends the user turn again,
as the real service (otherwise scripted turns start on their own, as server-initiated ones).

The microphone: ``realtimeInput.audio`` ``audio/pcm;rate=16000`` (another rate is an error, the
audio still counted), ``audioStreamEnd`` ends it; louder than ``vad_threshold`` RMS for 60 ms
during a turn interrupts it (``interrupted``). Client mistakes close the socket with 1007 as the
service does (bad JSON, an unknown message, a malformed field, ``setup`` twice), except a wrong
microphone rate and a result for a cancelled call, which are recorded only.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import re
import secrets
from collections import OrderedDict
from typing import Any, ClassVar

from aiohttp import web

from pyclient.frames import decode_json
from pyclient.protocols.gemini_live import INPUT_RATE

from .emulation import (
    EMULATION,
    MAX_ITEMS,
    OPEN_WAIT_S,
    RESUME_POINT_PREFIX,
    EmulatedSession,
    EmulationContext,
    EnergyVad,
    Refusal,
    SessionEnd,
    compact,
    resume_point,
)
from .scenarios import Params
from .stats import clip, summarise
from .tokens import NO_STORE, MintedToken, parse_rfc3339

CLOSE_INVALID = 1007  # INVALID_ARGUMENT
CLOSE_POLICY = 1008  # PERMISSION_DENIED / UNAUTHENTICATED
CLOSE_UNAVAILABLE = 1011
LIFETIME_S = 600.0
GOAWAY_S = 60.0
ASK_WAIT_S = 60.0  # asked=1: how long a model turn waits for the user's turn
MAX_FUTURE_S = 20 * 3600  # token times must be less than 20 hours ahead
DEADLINE_REASON = "Deadline expired before operation could complete."
NOT_VALID_KEY = "API key not valid. Please pass a valid API key."
UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
BAD_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential."
)
SETUP_FIELDS = frozenset(
    {
        "model",
        "generationConfig",
        "systemInstruction",
        "tools",
        "realtimeInputConfig",
        "sessionResumption",
        "contextWindowCompression",
        "inputAudioTranscription",
        "outputAudioTranscription",
        "proactivity",
        "explicitVadSignal",
        "avatarConfig",
        "safetySettings",
        "translationConfig",
        "historyConfig",
    }
)
REALTIME_FIELDS = frozenset({"mediaChunks", "audio", "video", "text", "activityStart", "activityEnd", "audioStreamEnd"})
TOKEN_FIELDS = frozenset(
    {"uses", "expireTime", "newSessionExpireTime", "bidiGenerateContentSetup", "fieldMask", "name"}
)
_RATE = re.compile(r"rate=(\d{1,6})")
_KEY_SHAPE = re.compile(r"AIza[0-9A-Za-z_-]{35}")


def duration(seconds: float) -> str:
    """A protobuf JSON Duration: ``"60s"``, ``"0.5s"``."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def unknown_name(name: str, where: str = "") -> str:
    at = f" at '{where}'" if where else ""
    return f'Invalid JSON payload received. Unknown name "{clip(name, 40)}"{at}: Cannot find field.'


def _setup_problem(setup: Any) -> str | None:
    if not isinstance(setup, dict):
        return "Invalid value at 'setup': expected an object."
    for key in setup:
        if key not in SETUP_FIELDS:
            return unknown_name(key, "setup")
    model = setup.get("model")
    if not isinstance(model, str) or not model.startswith(("models/", "tunedModels/")):
        return "setup.model must be a model resource name (models/...)."
    generation = setup.get("generationConfig")
    if generation is not None:
        if not isinstance(generation, dict):
            return "Invalid value at 'setup.generation_config': expected an object."
        modalities = generation.get("responseModalities")
        if modalities is not None and (
            not isinstance(modalities, list) or not modalities or any(m not in ("AUDIO", "TEXT") for m in modalities)
        ):
            return "Invalid value at 'setup.generation_config.response_modalities'."
    tools = setup.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            return "Invalid value at 'setup.tools': expected a list of objects."
        for tool in tools:
            decls = tool.get("functionDeclarations")
            if decls is not None and (
                not isinstance(decls, list)
                or not all(isinstance(d, dict) and isinstance(d.get("name"), str) and d["name"] for d in decls)
            ):
                return "Invalid value at 'setup.tools.function_declarations': each needs a name."
    resumption = setup.get("sessionResumption")
    if resumption is not None and not isinstance(resumption, dict):
        return "Invalid value at 'setup.session_resumption': expected an object."
    return None


class GeminiLiveSession(EmulatedSession):
    """The Gemini Live server, emulated (see the module docstring)."""

    protocol: ClassVar[str] = "gemini-live"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.setup_done = False
        self.resumption = False  # the client asked for sessionResumption
        self.turn_open = False
        self.turn_interrupted = False
        self.turn_calls: list[str] = []
        self.turn_item: int | None = None  # the scenario's audio item playing in this turn
        self.turn_units = 0  # text messages and 20 ms audio frames: usageMetadata's count
        self.turn_unresumable = False
        self.names: OrderedDict[str, str] = OrderedDict()  # call id -> tool name
        self.cancelled: OrderedDict[str, bool] = OrderedDict()
        self.cancel_done = False
        self.vads: dict[int, EnergyVad] = {}
        self.session_root = self.stats.id  # the first connection of the session (resumes keep it)
        self.asks = 0  # user turns received on this connection (asked=1)
        self.asks_answered = 0
        self.rec.update(
            {
                "setup": None,
                "tools_declared": [],
                "frames": "binary" if self.binary else "text",
                "resumed_from": None,
                "handles_sent": 0,
                "goaway_sent": False,
                "tool_calls_cancelled": [],
                "results_for_cancelled": 0,
                "audio_stream_end": 0,
                "client_contents": 0,
                "user_turns": 0,
                "turns_waited_for_user": 0,
                "waiting_for_user": False,
                "media_chunks": 0,
            }
        )

    def read_params(self, p: Params) -> None:
        self.binary = bool(p.num("binary", 0, 0, 1, int))
        self.lifetime_s = p.num("lifetime_s", LIFETIME_S, 0.1, 24 * 3600.0)
        self.goaway_s = p.num("goaway_s", min(GOAWAY_S, self.lifetime_s / 2), 0.0, self.lifetime_s)
        self.cancel_tool = bool(p.num("cancel_tool", 0, 0, 1, int))
        # asked=1: every model turn answers a user turn (clientContent with turnComplete, or
        # realtimeInput.text) the client sent on this connection; without one it waits
        self.asked = bool(p.num("asked", 0, 0, 1, int))
        self.cancel_ms = p.num("cancel_ms", 0.0, 0.0, 60_000.0)

    # ------------------------------------------------------------------ connecting

    @classmethod
    def authenticate(cls, ctx: EmulationContext, request: web.Request) -> MintedToken | Refusal | None:
        version, method = request.match_info["version"], request.match_info["method"]
        token = request.query.get("access_token")
        key = request.query.get("key") or request.headers.get("x-goog-api-key")
        if method == "BidiGenerateContentConstrained":
            if version != "v1alpha":
                return Refusal(CLOSE_POLICY, BAD_CREDENTIALS, f"ephemeral tokens work on v1alpha only, not {version}")
            if not token:
                why = "an API key on the constrained (token) method" if key else "no access_token"
                return Refusal(CLOSE_POLICY, BAD_CREDENTIALS if key else UNREGISTERED, why)
            record = ctx.store.find("gemini", token)
            if record is None:
                return Refusal(CLOSE_POLICY, BAD_CREDENTIALS, "unknown or expired auth token")
            return record
        if token:
            return Refusal(CLOSE_POLICY, UNREGISTERED, "access_token on BidiGenerateContent (it takes a key)")
        if not key:
            return Refusal(CLOSE_POLICY, UNREGISTERED, "no key")
        if key.startswith("auth_tokens/"):
            return Refusal(
                CLOSE_INVALID, NOT_VALID_KEY, "an auth token used as ?key= (it goes to v1alpha ...Constrained)"
            )
        if not ctx.key_ok("gemini", key, lambda k: bool(_KEY_SHAPE.fullmatch(k))):
            return Refusal(CLOSE_INVALID, NOT_VALID_KEY, "API key not valid")
        return None

    async def open_session(self) -> None:
        if not await self.wait_until(lambda: self.setup_done, OPEN_WAIT_S):
            self.check_open()
            self.client_error(f"no setup within {OPEN_WAIT_S:g} s of opening")
            raise SessionEnd(CLOSE_INVALID, "setup must be the first message")

    async def scenario_error(self, code: str, message: str) -> None:
        self.rec["scenario_error"] = clip(f"{code}: {message}", 200)
        raise SessionEnd(CLOSE_INVALID, f"{code}: {message}")

    def closed_as_told(self) -> bool:
        return bool(self.rec["goaway_sent"]) and self.closed.is_set()

    async def watchdog(self) -> None:
        await asyncio.sleep(max(0.0, self.lifetime_s - self.goaway_s))
        async with self.lock:
            await self.emit({"goAway": {"timeLeft": duration(self.goaway_s)}})
        self.rec["goaway_sent"] = True
        await asyncio.sleep(self.goaway_s)
        raise SessionEnd(CLOSE_UNAVAILABLE, DEADLINE_REASON)

    # ------------------------------------------------------------------ steps

    async def _in_turn(self) -> bool:
        if self.dropping:
            return False
        if not self.turn_open and self.asked:
            # A model turn answers the user: it waits for a user turn this connection has not
            # answered (a session resumed from a handle holds only what came before the handle:
            # a turn the loss cut short comes again only if the client asks again).
            self.rec["waiting_for_user"] = True
            asked = await self.wait_until(lambda: self.asks > self.asks_answered, ASK_WAIT_S)
            self.rec["waiting_for_user"] = False
            if not asked:
                if self.closed.is_set():
                    return False
                self.client_error(f"turn {self.turns + 1} began without a user turn after {ASK_WAIT_S:g} s (asked=1)")
            self.rec["turns_waited_for_user"] += 1
            self.asks_answered = min(self.asks, self.asks_answered + 1)  # a turn begun unasked owes none
        self.turn_open = True
        return True

    async def render_text(self, data: str | bytes) -> bool:
        raw, chunk = self.take_text(data)
        if not await self._in_turn():
            return False
        async with self.lock:
            if self.dropping:
                return False
            self.stats.on_text(raw)
            if not chunk:
                return True
            self.turn_units += 1
            if self.audio_scenario:
                await self.emit({"serverContent": {"outputTranscription": {"text": chunk}}})
            else:
                await self.emit({"serverContent": {"modelTurn": {"parts": [{"text": chunk}]}}})
        return True

    async def render_audio(self, pcm: bytes, sample_rate: int, item_id: int, final: bool) -> bool:
        if not await self._in_turn():
            return False
        async with self.lock:
            if self.dropping:
                return False
            self.stats.on_audio(pcm)
            self.turn_item = item_id
            self.turn_units += 1
            b64 = binascii.b2a_base64(pcm, newline=False).decode("ascii")
            await self.write(
                '{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm;rate='
                + str(sample_rate) + '","data":"' + b64 + '"}}]}}}'
            )  # fmt: skip
        return True

    async def render_tool_call(self, name: str, arguments: Any, expect: Any) -> str | None:
        return await self._tool_call(name, arguments, expect)

    async def _tool_call(self, name: str, args: Any, expect: Any = None) -> str | None:
        if not await self._in_turn():
            return None
        if self.cancel_tool and not self.cancel_done:
            await self._cancelled_call()
        async with self.lock:
            if self.dropping:
                return None
            call_id = self._call_id(name)
            self.expect_result(call_id, name, expect)
            self.stats.tool_calls_sent += 1
            self.turn_calls.append(call_id)
            await self.emit({"toolCall": {"functionCalls": [{"id": call_id, "name": name, "args": args}]}})
            if self.resumption and not self.turn_unresumable:  # a session executing calls cannot resume
                self.turn_unresumable = True
                await self.emit({"sessionResumptionUpdate": {"newHandle": "", "resumable": False}})
        return call_id

    def call_id_for(self, name: str) -> str | None:
        return self._call_id(name)

    def _call_id(self, name: str) -> str:
        # The same call of the same turn has the same id on every connection of a session (a
        # resumed session sends the interrupted turn again; the client answers it once).
        self.turn_call_count += 1
        key = f"{self.session_root}:{self.turns}:{self.turn_call_count}:{name}".encode()
        call_id = f"function-call-{int.from_bytes(hashlib.sha256(key).digest()[:8], 'big') >> 1}"
        self.names[call_id] = name
        while len(self.names) > MAX_ITEMS:
            self.names.popitem(last=False)
        return call_id

    async def _cancelled_call(self) -> None:
        """``cancel_tool=1``: a ``clock`` call the model withdraws (with the call, or ``cancel_ms`` after)."""
        self.cancel_done = True
        # A slow tool (the demo's ``slow_lookup`` runs for seconds): still running when the
        # cancellation arrives, whatever the scheduling, so a result for it is the client's fault.
        call_id = self._call_id("slow_lookup")
        args = {"query": "weather in Oslo", "seconds": 5}
        call = compact({"toolCall": {"functionCalls": [{"id": call_id, "name": "slow_lookup", "args": args}]}})
        cancel = compact({"toolCallCancellation": {"ids": [call_id]}})
        self.expect_result(call_id, "slow_lookup")
        self.stats.tool_calls_sent += 1
        self.rec["tool_calls_cancelled"].append(call_id)
        if self.cancel_ms:
            async with self.lock:
                await self.write(call)
            await asyncio.sleep(self.cancel_ms / 1000)
            async with self.lock:
                self._withdraw(call_id)
                await self.write(cancel)
        else:
            async with self.lock:
                self._withdraw(call_id)
                await self.write_together([call, cancel])

    def _withdraw(self, call_id: str) -> None:
        self._pending.pop(call_id, None)  # not awaited any more
        self.cancelled[call_id] = True
        while len(self.cancelled) > MAX_ITEMS:
            self.cancelled.popitem(last=False)

    async def control(self, type: str, **fields: Any) -> None:
        if self.skipping:  # a turn an earlier connection of the session delivered
            if type == "end_of_turn":
                self.skipped_turn()
            return
        if type == "end_of_turn":
            await self._end_turn()
        elif type == "interrupted":
            async with self.lock:
                await self._interrupt()
        elif type == "error":
            await self.scenario_error(str(fields.get("code", "error")), str(fields.get("message", "")))

    async def _interrupt(self) -> None:
        """Under ``lock``: the turn in flight is interrupted; its remaining steps are not sent."""
        if not self.turn_open or self.dropping:
            return
        self.rec["interruptions"] += 1
        await self.emit({"serverContent": {"interrupted": True}})
        self.turn_interrupted = True
        self.dropping = True
        if self.turn_item is not None:
            self.cut_items[self.turn_item] = None
            while len(self.cut_items) > MAX_ITEMS:
                del self.cut_items[next(iter(self.cut_items))]

    async def _end_turn(self) -> None:
        if self.turn_open and self.turn_calls:
            calls = list(self.turn_calls)
            await self.wait_progress(lambda: not any(c in self._pending for c in calls))
        async with self.lock:
            if self.turn_open:
                if not self.turn_interrupted:
                    await self.emit({"serverContent": {"generationComplete": True}})
                n = self.turn_units
                modality = "AUDIO" if self.audio_scenario else "TEXT"
                usage = {
                    "promptTokenCount": 120,
                    "responseTokenCount": n,
                    "totalTokenCount": 120 + n,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 120}],
                    "responseTokensDetails": [{"modality": modality, "tokenCount": n}],
                }
                await self.emit({"serverContent": {"turnComplete": True}, "usageMetadata": usage})
                self.turns += 1
                if self.resumption:
                    handle = resume_point(
                        RESUME_POINT_PREFIX, self.stats.id, self.session_root, self.turns, secrets.token_hex(6)
                    )
                    self.ctx.handles.issue(handle, self.stats.id, self.turns, self.session_root)
                    self.rec["handles_sent"] += 1
                    await self.emit({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})
            self.turn_open = self.turn_interrupted = self.turn_unresumable = False
            self.turn_calls, self.turn_item, self.turn_units = [], None, 0
            self.turn_call_count = 0
            self.dropping = False

    async def finish(self) -> None:
        await self._end_turn()
        await self.wait_results()

    # ------------------------------------------------------------------ client messages

    def _fail(self, message: str, reason: str) -> SessionEnd:
        """A client mistake the service closes the socket for (1007)."""
        self.client_error(message)
        return SessionEnd(CLOSE_INVALID, reason)

    async def on_message(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise self._fail(
                    f"a binary message of {len(data)} bytes that is not UTF-8 JSON", "Invalid JSON payload received."
                ) from exc
        try:
            obj = decode_json(data)
        except ValueError as exc:
            reason = f"Invalid JSON payload received. {str(exc)[:80]}"
            raise self._fail(f"bad JSON from the client ({len(data)} characters): {str(exc)[:100]}", reason) from None
        if not isinstance(obj, dict) or len(obj) != 1:
            what = f"an object with {len(obj)} fields" if isinstance(obj, dict) else f"a JSON {type(obj).__name__}"
            raise self._fail(
                f"a client message that is {what}; expected one of setup, clientContent, realtimeInput, toolResponse",
                "Invalid JSON payload received.",
            )
        key, value = next(iter(obj.items()))
        self.client_types.add(key)
        if not self.setup_done:
            if key != "setup":
                raise self._fail(
                    f"the client sent {clip(key, 40)!r} before setup (and setupComplete)",
                    "setup must be the first message",
                )
            await self._on_setup(value)
            return
        handler = _HANDLERS.get(key)
        if handler is None:
            raise self._fail(f"unknown client message {clip(key, 40)!r}", unknown_name(key))
        await handler(self, value)

    async def _on_setup(self, setup: Any) -> None:
        problem = _setup_problem(setup)
        if problem is not None:
            raise self._fail(f"setup refused: {problem}", problem)
        assert isinstance(setup, dict)
        resumption = setup.get("sessionResumption")
        handle = resumption.get("handle") if isinstance(resumption, dict) else None
        resumed = False
        if handle:
            issuer = self.ctx.handles.find(str(handle))
            if issuer is None:
                raise self._fail(
                    "setup resumes with an unknown or expired handle", "Invalid session resumption handle."
                )
            foreign = self.ctx.handles.foreign(str(handle))
            if not foreign and self.ctx.handles.is_open(issuer):
                self.client_error(f"resumed session {issuer} while its connection is still open (close it first)")
                raise SessionEnd(CLOSE_UNAVAILABLE, "The service is currently unavailable.")
            resumed = True
            turns, self.session_root = self.ctx.handles.turns(str(handle))
            self.resume_from(issuer, turns, foreign)
        if isinstance(self.auth, MintedToken):
            refused = self.ctx.store.start_session(self.auth, resumed)
            if refused is not None:
                self.client_error(f"refused: {refused}")
                raise SessionEnd(CLOSE_POLICY, BAD_CREDENTIALS)
        self.resumption = isinstance(resumption, dict)
        self.rec["setup"] = summarise(setup, 4096)
        names = []
        for tool in setup.get("tools") or []:
            names += [clip(d["name"], 64) for d in tool.get("functionDeclarations") or []]
        self.rec["tools_declared"] = names[:64]
        self.ctx.handles.opened(self.stats.id)
        async with self.lock:
            await self.emit({"setupComplete": {}})
        self.setup_done = True

    async def _on_realtime_input(self, value: Any) -> None:
        if not isinstance(value, dict):
            raise self._fail("realtimeInput is not an object", "Invalid value at 'realtime_input'.")
        for key in value:
            if key not in REALTIME_FIELDS:
                raise self._fail(f"unknown realtimeInput field {clip(key, 40)!r}", unknown_name(key, "realtime_input"))
        if "audio" in value:
            await self._mic(value["audio"])
        chunks = value.get("mediaChunks")
        if chunks is not None:
            if not isinstance(chunks, list):
                raise self._fail(
                    "realtimeInput.mediaChunks is not a list", "Invalid value at 'realtime_input.media_chunks'."
                )
            self.rec["media_chunks"] += len(chunks)
            for chunk in chunks:
                await self._mic(chunk)
        if value.get("audioStreamEnd") is True:
            self.rec["audio_stream_end"] += 1
            self._mic_end.set()
        if isinstance(value.get("text"), str):
            self.remember("user_texts", summarise(value["text"]))
            self._user_turn()

    async def _mic(self, blob: Any) -> None:
        if not isinstance(blob, dict) or not isinstance(blob.get("data"), str):
            raise self._fail("a realtimeInput blob without string data", "Invalid value at 'realtime_input.audio'.")
        mime = blob.get("mimeType")
        if not isinstance(mime, str) or not mime.lower().startswith("audio/pcm"):
            self.remember("other_media", clip(str(mime), 60))
            return
        try:
            pcm = binascii.a2b_base64(blob["data"], strict_mode=True)
        except (binascii.Error, ValueError):
            raise self._fail(
                f"realtimeInput audio of {len(blob['data'])} characters is not base64",
                "Invalid value at 'realtime_input.audio.data'.",
            ) from None
        m = _RATE.search(mime)
        rate = int(m.group(1)) if m else INPUT_RATE
        if rate != INPUT_RATE:
            self.client_error(f"microphone audio at {rate} Hz ({clip(mime, 60)}); Gemini Live takes {INPUT_RATE} Hz")
        if not 8000 <= rate <= 192_000 or len(pcm) % 2:
            raise self._fail(
                f"realtimeInput audio: {len(pcm)} bytes at {rate} Hz", "Invalid value at 'realtime_input.audio'."
            )
        self.on_mic(pcm, rate)
        vad = self.vads.get(rate)
        if vad is None:
            vad = self.vads[rate] = EnergyVad(rate, self.vad_threshold)
        for kind, _ms in vad.feed(pcm):
            if kind == "start":
                async with self.lock:
                    await self._interrupt()

    async def _on_tool_response(self, value: Any) -> None:
        responses = value.get("functionResponses") if isinstance(value, dict) else None
        if not isinstance(responses, list):
            raise self._fail("toolResponse without a functionResponses list", "Invalid value at 'tool_response'.")
        for entry in responses:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise self._fail(
                    "a functionResponse without a string id", "Invalid value at 'tool_response.function_responses'."
                )
            call_id = entry["id"]
            response = entry.get("response")
            if not isinstance(response, dict):
                raise self._fail(
                    f"functionResponse {clip(call_id, 60)}: response is not an object",
                    "Invalid value at 'tool_response.function_responses.response'.",
                )
            if call_id in self.cancelled:
                self.rec["results_for_cancelled"] += 1
                self.client_error(f"a result for call {clip(call_id, 60)}, which the server cancelled")
                continue
            expected = self.names.get(call_id)
            if expected is not None and entry.get("name") != expected:
                named = clip(str(entry.get("name")), 60)
                self.client_error(f"functionResponse {clip(call_id, 60)} names {named!r}, the call was {expected!r}")
            if set(response) == {"error"}:
                error = response["error"]
                self.tool_result(call_id, False, None, error if isinstance(error, dict) else {"message": str(error)})
            elif set(response) == {"output"}:
                self.tool_result(call_id, True, response["output"], None)
            else:
                self.tool_result(call_id, True, response, None)

    async def _on_client_content(self, value: Any) -> None:
        if not isinstance(value, dict):
            raise self._fail("clientContent is not an object", "Invalid value at 'client_content'.")
        self.rec["client_contents"] += 1
        self.remember("client_content", summarise(value))
        if value.get("turnComplete") is True:
            self._user_turn()

    def _user_turn(self) -> None:
        self.asks += 1
        self.rec["user_turns"] += 1

    async def _on_second_setup(self, value: Any) -> None:
        raise self._fail("setup sent twice", "setup must be the first message and only the first")


async def auth_tokens(request: web.Request) -> web.Response:
    """``POST /gemini/v1alpha/auth_tokens``: what generativelanguage.googleapis.com answers (js-genai
    ``tokens.ts``). Checks ``x-goog-api-key`` (or ``?key=``) and the body; returns ``{"name"}``."""
    ctx = request.app[EMULATION]
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    if not key:
        return _google_error(403, "PERMISSION_DENIED", UNREGISTERED)
    if key.startswith("auth_tokens/") or not ctx.key_ok("gemini", key, lambda k: bool(_KEY_SHAPE.fullmatch(k))):
        return _google_error(400, "INVALID_ARGUMENT", NOT_VALID_KEY, reason="API_KEY_INVALID")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    if not isinstance(body, dict):
        return _google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
    for name in body:
        if name not in TOKEN_FIELDS or name == "name":
            return _google_error(400, "INVALID_ARGUMENT", unknown_name(str(name)))
    now = ctx.store.clock()
    uses = body.get("uses", 1)
    if type(uses) is not int or uses < 0:
        return _google_error(400, "INVALID_ARGUMENT", "Invalid value at 'uses' (TYPE_INT32).")
    times: dict[str, float | None] = {}
    for name in ("expireTime", "newSessionExpireTime"):
        if name in body:
            when = parse_rfc3339(body[name])
            if when is None:
                return _google_error(
                    400,
                    "INVALID_ARGUMENT",
                    f"Invalid value at '{name}' (type.googleapis.com/google.protobuf.Timestamp).",
                )
            if not now < when < now + MAX_FUTURE_S:
                return _google_error(
                    400, "INVALID_ARGUMENT", f"{name} must be in the future and less than 20 hours ahead."
                )
            times[name] = when
        else:
            times[name] = None
    setup = body.get("bidiGenerateContentSetup")
    model = "models/gemini-2.5-flash-native-audio-latest"
    if setup is not None:
        if not isinstance(setup, dict):
            return _google_error(400, "INVALID_ARGUMENT", "Invalid value at 'bidi_generate_content_setup'.")
        if isinstance(setup.get("model"), str):
            model = setup["model"]
    mask = body.get("fieldMask")
    if mask is not None and not isinstance(mask, str):
        return _google_error(
            400, "INVALID_ARGUMENT", "Invalid value at 'field_mask' (type.googleapis.com/google.protobuf.FieldMask)."
        )
    name, _record = ctx.store.mint_gemini(
        model,
        uses=uses,
        expire_time=times["expireTime"],
        new_session_expire_time=times["newSessionExpireTime"],
        setup=setup if isinstance(setup, dict) else {},
    )
    return web.json_response({"name": name}, headers=NO_STORE)


def _google_error(status: int, kind: str, message: str, reason: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": kind}
    if reason:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
    return web.json_response({"error": error}, status=status, headers=NO_STORE)


async def faults(s: GeminiLiveSession, p: Params) -> None:
    """Valid text around messages a robust client counts and survives: bad JSON, an unknown
    message, ``serverContent`` that is not an object, audio that is not base64, a binary frame
    that is not UTF-8, a call to a tool nobody registered and a call whose args are not an object."""
    await s.text("before the faults. ")
    async with s.lock:
        await s.write("{not json")
        await s.emit({"someFutureMessage": {"x": 1}})
        await s.emit({"serverContent": []})
        bad_audio = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "@@ not base64 @@"}}
        await s.emit({"serverContent": {"modelTurn": {"parts": [bad_audio]}}})
        await s.write(b"\xff\xfe not UTF-8", binary=True)
    await s.tool_call("launch_rockets", {"count": 3})
    await s._tool_call("calculator", '{"expression": ')
    await s.text("after the faults.")
    await s.control("end_of_turn")


GeminiLiveSession.faults = faults  # type: ignore[assignment]

_HANDLERS = {
    "realtimeInput": GeminiLiveSession._on_realtime_input,
    "toolResponse": GeminiLiveSession._on_tool_response,
    "clientContent": GeminiLiveSession._on_client_content,
    "setup": GeminiLiveSession._on_second_setup,
}
